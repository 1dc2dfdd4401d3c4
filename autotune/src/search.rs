//! The search: evolutionary, steered by a cost model, over every task of a model.
//!
//! Like Ansor: each round picks a task, breeds candidates for it — random samples of its
//! space plus mutants and crossovers of the fastest measured schedules, over a few
//! generations in which the cost model ranks the population — and measures a small batch:
//! mostly the model's favourites, an `epsilon` share picked at random (so a wrong model
//! cannot starve the search). Each measurement is appended to the tuning database; after
//! each batch the model is retrained on every measurement. [`Strategy::Random`] measures
//! uniformly random schedules instead (the baseline the model is judged against).
//!
//! Tasks share the budget: first every task's default schedule is measured (the baseline);
//! then each round goes to the task whose weighted time, discounted by the trials it has
//! had, is largest. Measurements already in the database for the same workload, target,
//! compiler and feature version are loaded first, so tuning resumes where it stopped.

use crate::db::{Outcome, Record, TuningDb};
use crate::error::TuneError;
use crate::features::{candidate_features, feature_version};
use crate::measure::{Measurer, Plant};
use crate::model::CostModel;
use crate::space::Point;
use crate::task::Task;
use std::collections::HashSet;
use std::time::Instant;
use tessera_ir::Rng;
use tessera_passes::schedule::{KernelSchedule, apply_schedule, program_hash};

/// How candidates are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Evolutionary search ranked by the cost model, epsilon-greedy.
    Model,
    /// Uniformly random valid schedules.
    Random,
}

/// Options of a tuning run.
#[derive(Clone, Debug)]
pub struct TuneConfig {
    /// New measurements to make, over all tasks (defaults included).
    pub trials: usize,
    /// Candidates measured per round.
    pub batch: usize,
    /// Share of each batch picked at random instead of by the model.
    pub epsilon: f64,
    /// Candidates kept per generation.
    pub population: usize,
    /// Generations bred per round.
    pub generations: usize,
    pub strategy: Strategy,
    pub seed: u64,
    /// Stop starting measurements after this instant.
    pub deadline: Option<Instant>,
    /// Threads the kernels run on (feature `balance`).
    pub threads: usize,
    /// Database keys: the target and the compiler version.
    pub target_key: String,
    pub compiler: String,
    /// Measure every task's default schedule first (the baseline of its speed-up). Off when
    /// comparing search strategies, so that neither starts from the hand-picked default.
    pub measure_default: bool,
    /// Test hook: trial numbers (0-based, over the run) whose candidate is replaced by a
    /// planted broken one.
    pub plants: Vec<(usize, Plant)>,
    /// Measurements of other workloads the model also learns from (features, normalised
    /// throughput), e.g. [`TuningDb::training_data`] of earlier tuning runs.
    pub prior: (Vec<Vec<f32>>, Vec<f32>),
}

impl Default for TuneConfig {
    fn default() -> Self {
        TuneConfig {
            trials: 64,
            batch: 8,
            epsilon: 0.15,
            population: 48,
            generations: 3,
            strategy: Strategy::Model,
            seed: 1,
            deadline: None,
            threads: 1,
            target_key: String::new(),
            compiler: String::new(),
            measure_default: true,
            plants: Vec::new(),
            prior: (Vec::new(), Vec::new()),
        }
    }
}

/// One measured candidate.
#[derive(Clone, Debug)]
pub struct Trial {
    pub schedule: KernelSchedule,
    /// Hash of the scheduled program: knob settings that build the same program are one
    /// candidate.
    pub program: u64,
    pub point: Option<Point>,
    pub features: Vec<f32>,
    pub outcome: Outcome,
    /// Measured in this run (not loaded from the database).
    pub new: bool,
}

/// What happened to one task.
#[derive(Clone, Debug, Default)]
pub struct TaskState {
    pub trials: Vec<Trial>,
    /// The default schedule's time.
    pub default_ns: Option<u64>,
    /// Best time after each new trial of this run (for the tuning curve).
    pub curve: Vec<u64>,
}

impl TaskState {
    pub fn best(&self) -> Option<(&KernelSchedule, u64)> {
        self.trials
            .iter()
            .filter_map(|t| match t.outcome {
                Outcome::Ok { median_ns } => Some((&t.schedule, median_ns)),
                _ => None,
            })
            .min_by_key(|(_, ns)| *ns)
    }

    pub fn new_trials(&self) -> usize {
        self.trials.iter().filter(|t| t.new).count()
    }

    /// New trials that were wrong, failed or timed out.
    pub fn rejected(&self) -> usize {
        self.trials
            .iter()
            .filter(|t| t.new && !matches!(t.outcome, Outcome::Ok { .. }))
            .count()
    }
}

/// Something the caller may want to show.
#[derive(Debug)]
pub enum Event<'a> {
    /// A measurement finished.
    Measured {
        task: usize,
        trial: usize,
        outcome: &'a Outcome,
        best_ns: Option<u64>,
    },
}

/// Tunes `tasks`, appending every measurement to `db`. Returns one state per task.
pub fn tune(
    tasks: &[Task],
    cfg: &TuneConfig,
    model: &mut dyn CostModel,
    measurer: &mut Measurer,
    db: &mut TuningDb,
    progress: &mut dyn FnMut(Event),
) -> Result<Vec<TaskState>, TuneError> {
    let mut s = Search::new(tasks, cfg, model, Some(measurer), db);
    s.resume();
    s.retrain()?;
    // Baselines first: the default schedule of every task.
    for (i, t) in tasks.iter().enumerate() {
        if s.out_of_budget() || !cfg.measure_default {
            break;
        }
        let known = s.states[i].trials.iter().find(|x| x.schedule == t.default);
        match known.map(|x| &x.outcome) {
            Some(Outcome::Ok { median_ns }) => s.states[i].default_ns = Some(*median_ns),
            _ => {
                let ns = s.measure(i, t.default.clone(), None, progress)?;
                s.states[i].default_ns = ns;
            }
        }
    }
    while !s.out_of_budget() {
        let Some(i) = s.pick_task() else { break };
        let batch = s.propose(i)?;
        if batch.is_empty() {
            // No unmeasured program left in the task's space.
            s.exhausted[i] = true;
            continue;
        }
        for (sched, point) in batch {
            if s.out_of_budget() {
                break;
            }
            s.measure(i, sched, point, progress)?;
        }
        s.retrain()?;
    }
    Ok(s.states)
}

/// One candidate of a round proposed for another machine to measure.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub task: usize,
    pub schedule: KernelSchedule,
    /// The scheduled kernel.
    pub program: tessera_ir::loops::LoopProgram,
    pub features: Vec<f32>,
}

/// Proposes up to `cfg.trials` candidates over `tasks` without measuring them — for GPU
/// tuning, where the candidates are compiled here and timed on another machine, whose
/// measurements come back into `db` before the next round. As [`tune`] would: the database's
/// records of these tasks are loaded and the model retrained on them; each task's default
/// schedule comes first when it has no measurement; then batches of `cfg.batch` go to the
/// task whose weighted best time, discounted by its trials (proposals count), is largest.
/// Every proposal builds a program not measured before and not proposed twice.
pub fn propose_round(
    tasks: &[Task],
    cfg: &TuneConfig,
    model: &mut dyn CostModel,
    db: &mut TuningDb,
) -> Result<Vec<Proposal>, TuneError> {
    let mut s = Search::new(tasks, cfg, model, None, db);
    s.resume();
    s.retrain()?;
    let mut out = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        if out.len() >= cfg.trials || !cfg.measure_default {
            break;
        }
        if !s.states[i].trials.iter().any(|x| x.schedule == t.default) {
            s.propose_one(i, t.default.clone(), &mut out)?;
        }
    }
    while out.len() < cfg.trials {
        let Some(i) = s.pick_task() else { break };
        let batch = s.propose(i)?;
        if batch.is_empty() {
            s.exhausted[i] = true;
            continue;
        }
        for (schedule, _) in batch {
            if out.len() >= cfg.trials {
                break;
            }
            s.propose_one(i, schedule, &mut out)?;
        }
    }
    Ok(out)
}

/// A candidate built: its scheduled program, the program's hash, its features.
struct Built {
    program: tessera_ir::loops::LoopProgram,
    hash: u64,
    features: Vec<f32>,
}

struct Search<'a> {
    tasks: &'a [Task],
    cfg: &'a TuneConfig,
    model: &'a mut dyn CostModel,
    /// `None` when proposing a round for another machine to measure ([`propose_round`]).
    measurer: Option<&'a mut Measurer>,
    db: &'a mut TuningDb,
    states: Vec<TaskState>,
    /// Per task: programs proposed in this round, not measured yet.
    proposed: Vec<HashSet<u64>>,
    rng: Rng,
    /// New measurements made.
    done: usize,
    /// Tasks with no unmeasured candidate left.
    exhausted: Vec<bool>,
}

impl<'a> Search<'a> {
    fn new(
        tasks: &'a [Task],
        cfg: &'a TuneConfig,
        model: &'a mut dyn CostModel,
        measurer: Option<&'a mut Measurer>,
        db: &'a mut TuningDb,
    ) -> Search<'a> {
        Search {
            tasks,
            cfg,
            model,
            measurer,
            db,
            states: vec![TaskState::default(); tasks.len()],
            proposed: vec![HashSet::new(); tasks.len()],
            rng: Rng::new(cfg.seed),
            done: 0,
            exhausted: vec![false; tasks.len()],
        }
    }

    /// Adds task `i`'s candidate `schedule` to a round (see [`propose_round`]).
    fn propose_one(
        &mut self,
        i: usize,
        schedule: KernelSchedule,
        out: &mut Vec<Proposal>,
    ) -> Result<(), TuneError> {
        let b = self.build(i, &schedule)?;
        if self.proposed[i].insert(b.hash) {
            out.push(Proposal {
                task: i,
                schedule,
                program: b.program,
                features: b.features,
            });
        }
        Ok(())
    }

    fn out_of_budget(&self) -> bool {
        self.done >= self.cfg.trials || self.cfg.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Loads the database's measurements of these tasks.
    fn resume(&mut self) {
        for (i, t) in self.tasks.iter().enumerate() {
            let recs: Vec<Record> = self
                .db
                .records()
                .iter()
                .filter(|r| {
                    r.workload == t.workload
                        && r.target == self.cfg.target_key
                        && r.compiler == self.cfg.compiler
                        && r.feature_version == feature_version(&t.default)
                })
                .cloned()
                .collect();
            for r in recs {
                let Ok(schedule) = serde_json::from_value::<KernelSchedule>(r.schedule.clone())
                else {
                    continue;
                };
                let Some((program, features)) = self.features(i, &schedule) else {
                    continue;
                };
                self.states[i].trials.push(Trial {
                    program,
                    point: t.space.encode(&schedule),
                    schedule,
                    features,
                    outcome: r.outcome.clone(),
                    new: false,
                });
            }
        }
    }

    /// The scheduled program of a candidate, its hash and its features.
    fn build(&self, task: usize, schedule: &KernelSchedule) -> Result<Built, TuneError> {
        let t = &self.tasks[task];
        let mut k = t.kernel.clone();
        apply_schedule(&mut k, schedule).map_err(|e| TuneError::Space(e.to_string()))?;
        Ok(Built {
            hash: program_hash(&k.program),
            features: candidate_features(&t.kernel, schedule, &k.program, self.cfg.threads),
            program: k.program,
        })
    }

    /// The scheduled program's hash and the candidate's features.
    fn features(&self, task: usize, schedule: &KernelSchedule) -> Option<(u64, Vec<f32>)> {
        self.build(task, schedule)
            .ok()
            .map(|b| (b.hash, b.features))
    }

    /// Measures one candidate of task `i`, records it, and returns its time when correct.
    fn measure(
        &mut self,
        i: usize,
        schedule: KernelSchedule,
        point: Option<Point>,
        progress: &mut dyn FnMut(Event),
    ) -> Result<Option<u64>, TuneError> {
        let tasks = self.tasks;
        let t = &tasks[i];
        let plant = self
            .cfg
            .plants
            .iter()
            .find(|(n, _)| *n == self.done)
            .map(|(_, p)| *p);
        let built = self.build(i, &schedule);
        let measurer = self.measurer.as_deref_mut().ok_or_else(|| {
            TuneError::Measure("a round proposed for another machine measures nothing".into())
        })?;
        let (outcome, feats, program) = match built {
            Ok(b) => (
                measurer.measure(&b.program, &t.data, plant),
                b.features,
                b.hash,
            ),
            // Validated knobs that still fail to build are a tiling bug: record it as such.
            Err(e) => (
                Outcome::Failed {
                    detail: format!("schedule refused: {e}"),
                },
                vec![0.0; crate::features::feature_width(&schedule)],
                0,
            ),
        };
        self.db.append(Record {
            workload: t.workload.clone(),
            target: self.cfg.target_key.clone(),
            compiler: self.cfg.compiler.clone(),
            feature_version: feature_version(&schedule),
            schedule: serde_json::to_value(&schedule)
                .map_err(|e| TuneError::Space(e.to_string()))?,
            outcome: outcome.clone(),
            features: (program != 0).then(|| feats.clone()),
        })?;
        let st = &mut self.states[i];
        st.trials.push(Trial {
            schedule,
            program,
            point,
            features: feats,
            outcome: outcome.clone(),
            new: true,
        });
        let best = st.best().map(|(_, ns)| ns);
        st.curve.push(best.unwrap_or(u64::MAX));
        self.done += 1;
        progress(Event::Measured {
            task: i,
            trial: self.done,
            outcome: &outcome,
            best_ns: best,
        });
        Ok(match outcome {
            Outcome::Ok { median_ns } => Some(median_ns),
            _ => None,
        })
    }

    /// The task whose weighted best time, discounted by its trials so far, is largest
    /// (among tasks whose space is not exhausted).
    fn pick_task(&self) -> Option<usize> {
        (0..self.tasks.len())
            .filter(|&i| !self.exhausted[i])
            .map(|i| {
                let st = &self.states[i];
                let ns = st.best().map_or(1e9, |(_, ns)| ns as f64);
                let trials = st.new_trials() + self.proposed[i].len();
                let w = self.tasks[i].weight as f64 * ns / (1.0 + trials as f64).sqrt();
                (i, w)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }

    /// The next batch of unmeasured candidates for task `i`: each builds a program not
    /// measured before.
    fn propose(&mut self, i: usize) -> Result<Vec<(KernelSchedule, Option<Point>)>, TuneError> {
        let tasks = self.tasks;
        let t = &tasks[i];
        // Programs measured, or already in this batch.
        let mut taken: HashSet<u64> = self.states[i].trials.iter().map(|x| x.program).collect();
        taken.extend(&self.proposed[i]);
        let want = self.cfg.batch;
        let mut out: Vec<(KernelSchedule, Option<Point>)> = Vec::new();
        if self.cfg.strategy == Strategy::Random {
            for _ in 0..want {
                self.fresh_random(i, &mut out, &mut taken);
            }
            return Ok(out);
        }
        // Parents: the fastest measured points, then random samples.
        let mut measured: Vec<(u64, Point)> = self.states[i]
            .trials
            .iter()
            .filter_map(|x| match (&x.outcome, &x.point) {
                (Outcome::Ok { median_ns }, Some(p)) => Some((*median_ns, p.clone())),
                _ => None,
            })
            .collect();
        measured.sort_by_key(|(ns, _)| *ns);
        let elite: Vec<Point> = measured
            .into_iter()
            .take(self.cfg.population / 4)
            .map(|(_, p)| p)
            .collect();
        let mut pop: Vec<(Point, KernelSchedule)> = Vec::new();
        for _ in 0..self.cfg.population {
            if let Ok(x) = t.space.sample(&mut self.rng) {
                pop.push(x);
            }
        }
        for p in &elite {
            if let Ok(s) = t.space.decode(p) {
                pop.push((p.clone(), s));
            }
        }
        let mut ranked: Vec<(f32, u64, Point, KernelSchedule)> = Vec::new();
        for _ in 0..self.cfg.generations {
            let mut children = Vec::new();
            let parents: Vec<&Point> = elite.iter().chain(pop.iter().map(|(p, _)| p)).collect();
            if parents.is_empty() {
                // A small space whose every program is measured or taken: nothing to breed.
                break;
            }
            for _ in 0..self.cfg.population * 2 {
                // Half the parents are the fastest measured points: search near them.
                let a = if !elite.is_empty() && self.rng.below(2) == 0 {
                    &elite[self.rng.below(elite.len() as u64) as usize]
                } else {
                    parents[self.rng.below(parents.len() as u64) as usize]
                };
                let child = if self.rng.below(10) < 7 {
                    t.space.mutate(a, &mut self.rng)
                } else {
                    let b = parents[self.rng.below(parents.len() as u64) as usize];
                    t.space.crossover(a, b, &mut self.rng)
                };
                children.extend(child);
            }
            children.append(&mut pop);
            // One candidate per distinct, unmeasured program.
            let mut programs: HashSet<u64> = HashSet::new();
            let mut feats = Vec::new();
            let mut kept = Vec::new();
            for (p, s) in children {
                if let Some((h, f)) = self.features(i, &s)
                    && !taken.contains(&h)
                    && programs.insert(h)
                {
                    feats.push(f);
                    kept.push((h, p, s));
                }
            }
            let scores = self.model.predict(&feats)?;
            ranked = kept
                .into_iter()
                .zip(scores)
                .map(|((h, p, s), sc)| (sc, h, p, s))
                .collect();
            ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
            ranked.truncate(self.cfg.population);
            pop = ranked
                .iter()
                .map(|(_, _, p, s)| (p.clone(), s.clone()))
                .collect();
        }
        let mut ranked = ranked.into_iter();
        while out.len() < want {
            if self.rng.uniform() < self.cfg.epsilon {
                self.fresh_random(i, &mut out, &mut taken);
                continue;
            }
            match ranked.next() {
                Some((_, h, p, s)) => {
                    if taken.insert(h) {
                        out.push((s, Some(p)));
                    }
                }
                None => {
                    let before = out.len();
                    self.fresh_random(i, &mut out, &mut taken);
                    if out.len() == before {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Adds one random candidate with a program not yet taken (if one turns up).
    fn fresh_random(
        &mut self,
        i: usize,
        out: &mut Vec<(KernelSchedule, Option<Point>)>,
        taken: &mut HashSet<u64>,
    ) {
        for _ in 0..64 {
            let Ok((p, s)) = self.tasks[i].space.sample(&mut self.rng) else {
                return;
            };
            if let Some((h, _)) = self.features(i, &s)
                && taken.insert(h)
            {
                out.push((s, Some(p)));
                return;
            }
        }
    }

    /// Retrains the model on every measurement, labelled with normalised throughput.
    fn retrain(&mut self) -> Result<(), TuneError> {
        let mut xs = self.cfg.prior.0.clone();
        let mut ys = self.cfg.prior.1.clone();
        let mut ws = vec![1.0f32; xs.len()];
        for st in &self.states {
            let Some((_, best)) = st.best() else { continue };
            for t in &st.trials {
                let y = match t.outcome {
                    Outcome::Ok { median_ns } => best as f32 / median_ns.max(1) as f32,
                    _ => 0.0,
                };
                xs.push(t.features.clone());
                ys.push(y);
                ws.push(OWN_WEIGHT);
            }
        }
        self.model.train(&xs, &ys, &ws)
    }
}

/// Weight of a measurement of a workload being tuned, against 1 for records of other
/// workloads: the model adapts to the workload at hand as soon as it has measured it.
const OWN_WEIGHT: f32 = 5.0;
