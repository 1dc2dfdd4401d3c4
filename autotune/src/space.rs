//! The search space of one kernel's schedule, as data.
//!
//! A [`Space`] is a list of [`Knob`]s, each a name and the values it may take; a point of
//! the space picks one value index per knob. [`Space::decode`] turns a point into a
//! [`KernelSchedule`] and validates it (the product tiling's and loop schedule's own
//! validation), so an invalid combination is rejected by construction: sampling, mutation
//! and crossover only ever hand out schedules that can be built.
//!
//! Matrix-product kernels (those that record a `ProductSpec`) get the tiled product's knobs
//! (register tile `mr x nr`, `k` block, rows per parallel task, packing of `B`) plus a
//! selector between the tiled and the plain loop schedule; every kernel gets the plain loop
//! schedule's knobs (parallel loop size, vector width, unroll).

use crate::error::TuneError;
use tessera_ir::Rng;
use tessera_passes::lower::Kernel;
use tessera_passes::product::{ProductSpec, ProductTiling};
use tessera_passes::schedule::{KernelSchedule, LoopSchedule};

/// One knob and the values it may take.
#[derive(Clone, Debug, PartialEq)]
pub struct Knob {
    pub name: &'static str,
    pub values: Vec<i64>,
}

/// A point of a space: one index into each knob's values.
pub type Point = Vec<usize>;

/// The schedule space of one kernel.
#[derive(Clone, Debug)]
pub struct Space {
    pub knobs: Vec<Knob>,
    /// The product the kernel computes, when the tiled product schedule applies.
    spec: Option<ProductSpec>,
    /// Vector width in f32 lanes of the target.
    lanes: i64,
    /// A GPU kernel's space (see [`crate::gpu_space`]); `None` for the CPU.
    gpu: Option<crate::gpu_space::GpuSpace>,
}

const TILED: &str = "tiled";
const MR: &str = "mr";
const NR_VECTORS: &str = "nr_vectors";
const KC: &str = "kc";
const ROW_TILES: &str = "row_tiles";
const PACK_B: &str = "pack_b";
const CONV_ROWS: &str = "conv_rows";
const CONV_SEGMENTS: &str = "conv_segments";
const K_LANES: &str = "k_lanes";
const ROW_VECTORS: &str = "row_vectors";
const PARALLEL: &str = "parallel_min_extent";
const VECTOR: &str = "vector_bytes";
const UNROLL: &str = "unroll";

/// How many draws [`Space::sample`] makes before concluding the space has no valid point.
const SAMPLE_TRIES: usize = 1000;

impl Space {
    /// The space of kernel `k` on a target with `vector_bytes`-wide vectors.
    pub fn for_kernel(k: &Kernel, vector_bytes: usize) -> Space {
        let lanes = (vector_bytes / 4).max(1) as i64;
        let mut knobs = Vec::new();
        let spec = k
            .product
            .clone()
            .filter(|s| s.dtype == tessera_ir::DType::F32);
        if let Some(spec) = &spec {
            // k blocks longer than the product's k are all the same schedule: keep one.
            let kcs: Vec<i64> = [16, 32, 64, 128, 192, 256, 384, 512, 1024]
                .into_iter()
                .filter(|&kc| kc < 2 * spec.k.max(16))
                .collect();
            knobs.extend([
                Knob {
                    name: TILED,
                    values: vec![1, 0],
                },
                Knob {
                    name: MR,
                    values: (1..=12).collect(),
                },
                Knob {
                    name: NR_VECTORS,
                    values: vec![1, 2, 3, 4, 6, 8],
                },
                Knob {
                    name: KC,
                    values: kcs,
                },
                Knob {
                    name: ROW_TILES,
                    values: vec![1, 2, 3, 4, 6, 8, 12, 16, 32, 64],
                },
                Knob {
                    name: PACK_B,
                    values: vec![1, 0],
                },
            ]);
            // Dot products along k for a B contiguous along k (then without packing).
            if tessera_passes::product::suits_k_lanes(spec) {
                knobs.push(Knob {
                    name: K_LANES,
                    values: vec![0, 1],
                });
            }
            // Rows along the lanes, in tiles of this many vectors (0: columns along them).
            if tessera_passes::product::suits_row_lanes(spec, lanes) && spec.m % lanes == 0 {
                knobs.push(Knob {
                    name: ROW_VECTORS,
                    values: vec![0, 1, 2, 3, 4],
                });
            }
            // Convolutions: panels of whole output rows (their width then sets `nr`).
            if let Some(conv) = spec.conv.as_ref().filter(|c| !c.is_pointwise()) {
                knobs.push(Knob {
                    name: CONV_ROWS,
                    values: [0, 1, 2, 3, 4, 6, 8, 12, 16]
                        .into_iter()
                        .filter(|&r| r <= conv.oh)
                        .collect(),
                });
                // With one row per panel: the row in equal segments (wide images).
                knobs.push(Knob {
                    name: CONV_SEGMENTS,
                    values: (1..=8).filter(|&s| conv.ow % s == 0).collect(),
                });
            }
        }
        knobs.extend([
            Knob {
                name: PARALLEL,
                values: vec![0, 1, 2, 4, 8, 16, 32, 64, 256],
            },
            Knob {
                name: VECTOR,
                values: vec![0, 16, 32, 64, 128],
            },
            Knob {
                name: UNROLL,
                values: vec![1, 2, 4, 8],
            },
        ]);
        Space {
            knobs,
            spec,
            lanes,
            gpu: None,
        }
    }

    /// The GPU schedule space of kernel `k` on a GPU of compute capability `sm` (see
    /// [`crate::gpu_space`]).
    pub fn for_gpu_kernel(k: &Kernel, sm: u32) -> Result<Space, TuneError> {
        crate::gpu_space::for_gpu_kernel(k, sm)
    }

    pub(crate) fn gpu(knobs: Vec<Knob>, gpu: crate::gpu_space::GpuSpace) -> Space {
        Space {
            knobs,
            spec: None,
            lanes: 1,
            gpu: Some(gpu),
        }
    }

    fn has_knob(&self, name: &str) -> bool {
        self.knobs.iter().any(|k| k.name == name)
    }

    /// Whether the tiled product schedule is part of this space.
    pub fn has_product(&self) -> bool {
        self.spec.is_some()
    }

    /// The number of points (not all valid).
    pub fn size(&self) -> u128 {
        self.knobs.iter().map(|k| k.values.len() as u128).product()
    }

    pub(crate) fn value(&self, p: &Point, name: &str) -> Result<i64, TuneError> {
        let i = self
            .knobs
            .iter()
            .position(|k| k.name == name)
            .ok_or_else(|| TuneError::Space(format!("no knob `{name}`")))?;
        let k = &self.knobs[i];
        p.get(i)
            .and_then(|&j| k.values.get(j))
            .copied()
            .ok_or_else(|| TuneError::Space(format!("point {p:?} is outside knob `{name}`")))
    }

    /// The schedule at point `p`, validated.
    pub fn decode(&self, p: &Point) -> Result<KernelSchedule, TuneError> {
        if p.len() != self.knobs.len() {
            return Err(TuneError::Space(format!(
                "point {p:?} has {} coordinates, the space {} knobs",
                p.len(),
                self.knobs.len()
            )));
        }
        if let Some(gpu) = &self.gpu {
            return crate::gpu_space::decode(self, gpu, p).map(KernelSchedule::Gpu);
        }
        if let Some(spec) = &self.spec
            && self.value(p, TILED)? == 1
        {
            let mr = self.value(p, MR)?;
            let row_lanes = match self.has_knob(ROW_VECTORS) {
                true => self.value(p, ROW_VECTORS)? * self.lanes,
                false => 0,
            };
            // Rows per task beyond the product's rows are all one schedule: clamp. A row
            // tile is `mr` rows, or `row_lanes` with the rows along the lanes.
            let tile_rows = if row_lanes > 0 { row_lanes } else { mr };
            let row_block =
                (tile_rows * self.value(p, ROW_TILES)?).min(round_up(spec.m, tile_rows));
            let conv_rows = match &spec.conv {
                Some(_) if self.has_knob(CONV_ROWS) => self.value(p, CONV_ROWS)?,
                _ => 0,
            };
            // Segments split single rows only; elsewhere the knob does not matter.
            let conv_segments = match conv_rows {
                1 => self.value(p, CONV_SEGMENTS)?,
                _ => 1,
            };
            // Row panels set the panel's width; `nr_vectors` then does not matter (and
            // `encode` leaves it at its first value).
            let nr = match &spec.conv {
                Some(conv) if conv_rows > 0 => {
                    round_up(conv.panel_pixels(conv_rows, conv_segments), self.lanes)
                }
                _ => self.value(p, NR_VECTORS)? * self.lanes,
            };
            let kc = match &spec.conv {
                // Row panels' k blocks hold whole channels.
                Some(conv) if conv_rows > 0 => conv.whole_channels(self.value(p, KC)?),
                _ => self.value(p, KC)?,
            };
            let t = ProductTiling {
                mr,
                nr,
                kc,
                row_block,
                lanes: self.lanes,
                pack_b: self.value(p, PACK_B)? == 1,
                conv_rows,
                conv_segments,
                k_lanes: self.has_knob(K_LANES) && self.value(p, K_LANES)? == 1,
                row_lanes,
            };
            t.validate(spec)
                .map_err(|e| TuneError::Space(e.to_string()))?;
            return Ok(KernelSchedule::Product(t));
        }
        let s = LoopSchedule {
            parallel_min_extent: self.value(p, PARALLEL)?,
            vector_bytes: self.value(p, VECTOR)? as u32,
            unroll: self.value(p, UNROLL)? as u32,
        };
        s.validate().map_err(|e| TuneError::Space(e.to_string()))?;
        Ok(KernelSchedule::Loops(s))
    }

    /// A point whose schedule is `s`, when `s` is one of this space's schedules.
    pub fn encode(&self, s: &KernelSchedule) -> Option<Point> {
        let mut want: Vec<(&str, i64)> = Vec::new();
        match s {
            KernelSchedule::Gpu(_) => {
                self.gpu.as_ref()?;
                want = crate::gpu_space::knob_values(s)?;
            }
            KernelSchedule::Product(t) => {
                self.spec.as_ref()?;
                self.gpu.is_none().then_some(())?;
                want.extend([
                    (TILED, 1),
                    (MR, t.mr),
                    (
                        ROW_TILES,
                        t.row_block / if t.row_lanes > 0 { t.row_lanes } else { t.mr },
                    ),
                    (ROW_VECTORS, t.row_lanes / self.lanes),
                    (PACK_B, t.pack_b as i64),
                    (CONV_ROWS, t.conv_rows),
                    (CONV_SEGMENTS, t.conv_segments.max(1)),
                    (K_LANES, t.k_lanes as i64),
                ]);
                if t.conv_rows == 0 {
                    want.extend([(NR_VECTORS, t.nr / self.lanes), (KC, t.kc)]);
                } else {
                    // Row panels round kc down to whole channels: any knob value that rounds
                    // to it will do; `decode` below checks.
                    let conv = self.spec.as_ref()?.conv.as_ref()?;
                    let kcs = &self.knobs.iter().find(|k| k.name == KC)?.values;
                    let kc = kcs.iter().find(|&&v| conv.whole_channels(v) == t.kc)?;
                    want.push((KC, *kc));
                }
            }
            KernelSchedule::Loops(l) => {
                self.gpu.is_none().then_some(())?;
                want.extend([
                    (TILED, 0),
                    (PARALLEL, l.parallel_min_extent),
                    (VECTOR, l.vector_bytes as i64),
                    (UNROLL, l.unroll as i64),
                ]);
            }
        }
        let p: Point = self
            .knobs
            .iter()
            .map(|k| match want.iter().find(|(n, _)| *n == k.name) {
                Some((_, v)) => k.values.iter().position(|x| x == v),
                None => Some(0),
            })
            .collect::<Option<_>>()?;
        (self.decode(&p).ok().as_ref() == Some(s)).then_some(p)
    }

    /// A uniformly random valid point and its schedule.
    pub fn sample(&self, rng: &mut Rng) -> Result<(Point, KernelSchedule), TuneError> {
        for _ in 0..SAMPLE_TRIES {
            let p: Point = self
                .knobs
                .iter()
                .map(|k| rng.below(k.values.len() as u64) as usize)
                .collect();
            if let Ok(s) = self.decode(&p) {
                return Ok((p, s));
            }
        }
        Err(TuneError::Space(format!(
            "no valid schedule in {SAMPLE_TRIES} draws"
        )))
    }

    /// `p` with one or two knobs moved (to a neighbouring value, or anywhere); `None` when
    /// no valid mutant turned up.
    pub fn mutate(&self, p: &Point, rng: &mut Rng) -> Option<(Point, KernelSchedule)> {
        for _ in 0..32 {
            let mut q = p.clone();
            let moves = 1 + rng.below(2) as usize;
            for _ in 0..moves {
                let i = rng.below(self.knobs.len() as u64) as usize;
                let n = self.knobs[i].values.len();
                q[i] = if rng.below(2) == 0 {
                    // A step to a neighbouring value: fine-tuning.
                    let step = if rng.below(2) == 0 { 1 } else { n - 1 };
                    (q[i] + step) % n
                } else {
                    rng.below(n as u64) as usize
                };
            }
            if let Ok(s) = self.decode(&q) {
                return Some((q, s));
            }
        }
        None
    }

    /// Each knob from one parent or the other; `None` when no valid child turned up.
    pub fn crossover(
        &self,
        a: &Point,
        b: &Point,
        rng: &mut Rng,
    ) -> Option<(Point, KernelSchedule)> {
        for _ in 0..16 {
            let q: Point = a
                .iter()
                .zip(b)
                .map(|(&x, &y)| if rng.below(2) == 0 { x } else { y })
                .collect();
            if let Ok(s) = self.decode(&q) {
                return Some((q, s));
            }
        }
        None
    }
}

fn round_up(x: i64, m: i64) -> i64 {
    (x.max(1) + m - 1) / m * m
}
