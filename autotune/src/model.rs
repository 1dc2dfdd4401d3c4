//! Cost models: given candidates' feature vectors, predict which will be fast.
//!
//! A [`CostModel`] scores a batch of feature vectors (higher = faster) and learns from
//! measurements. The learning target is the *normalised throughput* of a measurement: the
//! best time seen for its workload divided by its time, so 1.0 is the best known schedule of
//! each workload and a miscomputing or failing candidate scores 0 — comparable across
//! workloads of very different sizes, as Ansor's model is trained.
//!
//! - [`XgbModel`]: gradient-boosted trees (XGBoost through xgboost-rs), retrained from all
//!   measurements after each batch; the boosting rounds are driven here (xgboost-rs's
//!   `train` ignores the round count). Saved and loaded as XGBoost's JSON model.
//! - [`AnalyticModel`]: a hand-written estimate from the same features (register-tile
//!   occupancy, loads per FMA, tails, vectorization, load balance); the fallback until the
//!   learned model has data.

use crate::error::TuneError;
use crate::features::FEATURES;
use crate::gpu_features::{GPU_FEATURES, analytic_gpu_score};
use std::collections::HashMap;
use std::path::Path;
use xgboost_rs::{Booster, DMatrix};

/// A batched cost model.
pub trait CostModel {
    /// A short name for reports.
    fn name(&self) -> &str;
    /// Scores of `features` (one vector per candidate); higher means predicted faster.
    fn predict(&mut self, features: &[Vec<f32>]) -> Result<Vec<f32>, TuneError>;
    /// Learns from all measurements so far: features, normalised throughput (0..=1) and a
    /// weight per sample (the current workloads' own measurements count more than records
    /// of other workloads).
    fn train(
        &mut self,
        features: &[Vec<f32>],
        throughput: &[f32],
        weights: &[f32],
    ) -> Result<(), TuneError>;
}

/// Options of the XGBoost model.
#[derive(Clone, Debug)]
pub struct XgbConfig {
    /// Boosting rounds per training.
    pub rounds: u32,
    pub max_depth: u32,
    pub eta: f32,
    /// Fewer measurements than this: predict with the analytic model instead.
    pub min_samples: usize,
}

impl Default for XgbConfig {
    fn default() -> Self {
        XgbConfig {
            rounds: 60,
            max_depth: 6,
            eta: 0.2,
            min_samples: 8,
        }
    }
}

/// Gradient-boosted trees trained on measurements.
pub struct XgbModel {
    config: XgbConfig,
    booster: Option<Booster>,
    fallback: AnalyticModel,
}

fn xgb(e: xgboost_rs::XGBError) -> TuneError {
    TuneError::Model(e.to_string())
}

fn matrix(features: &[Vec<f32>]) -> Result<DMatrix, TuneError> {
    // One layout per matrix: the CPU's or the GPU's.
    let width = features.first().map_or(FEATURES.len(), Vec::len);
    if ![FEATURES.len(), GPU_FEATURES.len()].contains(&width) {
        return Err(TuneError::Model(format!(
            "feature vector of length {width}, expected {} (CPU) or {} (GPU)",
            FEATURES.len(),
            GPU_FEATURES.len()
        )));
    }
    if let Some(bad) = features.iter().find(|f| f.len() != width) {
        return Err(TuneError::Model(format!(
            "feature vectors of lengths {width} and {} in one batch",
            bad.len()
        )));
    }
    let flat: Vec<f32> = features.iter().flatten().copied().collect();
    DMatrix::from_dense(&flat, features.len()).map_err(xgb)
}

impl XgbModel {
    pub fn new(config: XgbConfig) -> XgbModel {
        XgbModel {
            config,
            booster: None,
            fallback: AnalyticModel,
        }
    }

    /// Whether the model has been trained (or loaded).
    pub fn trained(&self) -> bool {
        self.booster.is_some()
    }

    /// Writes the trained model (XGBoost's JSON format).
    pub fn save(&self, path: &Path) -> Result<(), TuneError> {
        let b = self
            .booster
            .as_ref()
            .ok_or_else(|| TuneError::Model("the model is not trained".into()))?;
        let text = b.save_to_buffer("json".into()).map_err(xgb)?;
        std::fs::write(path, text).map_err(|e| TuneError::Model(format!("{}: {e}", path.display())))
    }

    /// Reads a model written by [`XgbModel::save`].
    pub fn load(path: &Path, config: XgbConfig) -> Result<XgbModel, TuneError> {
        let bytes = std::fs::read(path)
            .map_err(|e| TuneError::Model(format!("{}: {e}", path.display())))?;
        let booster = Booster::load_buffer(&bytes).map_err(xgb)?;
        Ok(XgbModel {
            config,
            booster: Some(booster),
            fallback: AnalyticModel,
        })
    }
}

impl CostModel for XgbModel {
    fn name(&self) -> &str {
        "xgboost"
    }

    fn predict(&mut self, features: &[Vec<f32>]) -> Result<Vec<f32>, TuneError> {
        match &self.booster {
            Some(b) if !features.is_empty() => b.predict(&matrix(features)?).map_err(xgb),
            _ => self.fallback.predict(features),
        }
    }

    fn train(
        &mut self,
        features: &[Vec<f32>],
        throughput: &[f32],
        weights: &[f32],
    ) -> Result<(), TuneError> {
        if features.len() < self.config.min_samples {
            return Ok(());
        }
        let mut dtrain = matrix(features)?;
        dtrain.set_labels(throughput).map_err(xgb)?;
        if weights.len() == features.len() {
            dtrain.set_weights(weights).map_err(xgb)?;
        }
        let params: HashMap<String, String> = [
            ("objective", "reg:squarederror".to_string()),
            ("max_depth", self.config.max_depth.to_string()),
            ("eta", self.config.eta.to_string()),
            ("min_child_weight", "1".to_string()),
            ("nthread", "1".to_string()),
            ("verbosity", "0".to_string()),
            ("seed", "7".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut b = Booster::new_with_json_config(&[&dtrain], params).map_err(xgb)?;
        for round in 0..self.config.rounds {
            b.update(&dtrain, round as i32).map_err(xgb)?;
        }
        self.booster = Some(b);
        Ok(())
    }
}

/// A hand-written estimate of relative speed from the features.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnalyticModel;

impl AnalyticModel {
    fn score(f: &[f32]) -> f32 {
        if f.len() == GPU_FEATURES.len() {
            return analytic_gpu_score(f);
        }
        let at = |name: &str| {
            FEATURES
                .iter()
                .position(|(n, _)| *n == name)
                .map_or(0.0, |i| f[i])
        };
        let balance = at("balance").max(0.05);
        if at("is_tiled_product") == 1.0 {
            // A micro-kernel wants many accumulators (FMA latency x ports) and few loads per
            // FMA; tails run narrower code; a panel that spills L1 stalls the loads.
            let occupancy = (at("accumulators") / 24.0).min(1.0);
            let loads = 1.0 / (1.0 + at("loads_per_fma"));
            let tails = 1.0 - 0.5 * (at("row_tail") + at("col_tail") + 0.2 * at("k_tail"));
            let l1 = if at("log_panel_bytes") > 16.0 {
                0.7
            } else {
                1.0
            };
            occupancy * loads * tails * l1 * balance
        } else {
            let vector = 0.25 + 0.75 * at("vector_fraction");
            vector * balance
        }
    }
}

impl CostModel for AnalyticModel {
    fn name(&self) -> &str {
        "analytic"
    }

    fn predict(&mut self, features: &[Vec<f32>]) -> Result<Vec<f32>, TuneError> {
        Ok(features.iter().map(|f| Self::score(f)).collect())
    }

    fn train(&mut self, _: &[Vec<f32>], _: &[f32], _: &[f32]) -> Result<(), TuneError> {
        Ok(())
    }
}
