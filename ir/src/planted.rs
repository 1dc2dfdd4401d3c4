//! Planted bugs: realistic miscompilations that the fuzzers must find (the planted-bug
//! benchmark, `scripts/planted_bugs.sh`).
//!
//! Built only with the `planted-bugs` feature; without it [`active`] is a constant `false`
//! and every planted branch folds away, so release builds carry none of them. With the
//! feature, the environment variable `TESSERA_PLANT` names the one bug that is live (read
//! once per process); no variable, no bug — a planted build behaves like a normal one until
//! asked.
//!
//! Each bug sits in the pass or backend it is named after, as a one-line deviation of the
//! kind real compilers ship (off-by-one tails, dropped checks, wrong initial values, a wrong
//! rewrite, signedness confusion). Adding one: a variant here, its name in [`Bug::name`], and
//! an `if planted::active(Bug::X)` at the site.

/// A miscompilation that can be planted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// `schedule::split`: the outer loop's extent rounds down, so an uneven tail is dropped.
    SplitTail,
    /// `schedule::fuse`: the fused index is divided by the outer extent instead of the inner.
    FuseIndex,
    /// `product::tile`: the last, partial `kc` block of the reduction dimension is skipped.
    ProductKTail,
    /// Lowering of `ReduceMax`: the accumulator starts at 0 instead of −∞.
    ReduceMaxInit,
    /// Layout rule `transpose-transpose`: the two permutations compose in the wrong order.
    TransposeCompose,
    /// Conv + BatchNormalization folding: the scale divides by the variance, not its root.
    ConvBnFold,
    /// Lowering of windows (pooling, direct convolutions): taps above the input count as
    /// inside (the first row read again, through a clamped address).
    PoolPadBound,
    /// Memory planner: a buffer is freed one step early (its last reader may see it reused).
    PlanLiveness,
    /// Code generation: the masked tail of a vector loop is skipped when one lane is left.
    VectorTail,
    /// Code generation: an unrolled loop forgets its remainder iterations.
    UnrollRemainder,
    /// Code generation: signed `>=` on indices is emitted as unsigned (negative = huge).
    IndexCmpUnsigned,
    /// `schedule::reorder`: loops are interchanged without the dependence check (a
    /// recurrence's wavefront order is broken).
    ReorderDependence,
    /// Code generation of a `vectorize(w)` reduction: the masked remainder's inactive lanes
    /// fold the masked load's zero instead of the identity (a max over negatives reads 0).
    LaneFoldIdentity,
    /// Concatenation in place: a piece's offset counts elements instead of bytes, so pieces
    /// overlap inside the concatenation's buffer.
    ConcatViewOffset,
    /// Code generation: a `select` whose branch may read outside its buffer evaluates both
    /// branches eagerly, as if every address were in bounds (the values are still right; the
    /// reads are not).
    EagerSelect,
}

impl Bug {
    pub const ALL: [Bug; 15] = [
        Bug::SplitTail,
        Bug::FuseIndex,
        Bug::ProductKTail,
        Bug::ReduceMaxInit,
        Bug::TransposeCompose,
        Bug::ConvBnFold,
        Bug::PoolPadBound,
        Bug::PlanLiveness,
        Bug::VectorTail,
        Bug::UnrollRemainder,
        Bug::IndexCmpUnsigned,
        Bug::ReorderDependence,
        Bug::LaneFoldIdentity,
        Bug::ConcatViewOffset,
        Bug::EagerSelect,
    ];

    /// The name `TESSERA_PLANT` takes.
    pub fn name(self) -> &'static str {
        match self {
            Bug::SplitTail => "split-tail",
            Bug::FuseIndex => "fuse-index",
            Bug::ProductKTail => "product-k-tail",
            Bug::ReduceMaxInit => "reduce-max-init",
            Bug::TransposeCompose => "transpose-compose",
            Bug::ConvBnFold => "conv-bn-fold",
            Bug::PoolPadBound => "pool-pad-bound",
            Bug::PlanLiveness => "plan-liveness",
            Bug::VectorTail => "vector-tail",
            Bug::UnrollRemainder => "unroll-remainder",
            Bug::IndexCmpUnsigned => "index-cmp-unsigned",
            Bug::ReorderDependence => "reorder-dependence",
            Bug::LaneFoldIdentity => "lane-fold-identity",
            Bug::ConcatViewOffset => "concat-view-offset",
            Bug::EagerSelect => "eager-select",
        }
    }

    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// Whether `bug` is live in this process.
#[cfg(feature = "planted-bugs")]
pub fn active(bug: Bug) -> bool {
    static LIVE: std::sync::OnceLock<Option<Bug>> = std::sync::OnceLock::new();
    *LIVE.get_or_init(|| {
        std::env::var("TESSERA_PLANT")
            .ok()
            .and_then(|n| Bug::from_name(&n))
    }) == Some(bug)
}

/// Whether `bug` is live in this process: never, without the `planted-bugs` feature.
#[cfg(not(feature = "planted-bugs"))]
#[inline(always)]
pub const fn active(_bug: Bug) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        for b in Bug::ALL {
            assert_eq!(Bug::from_name(b.name()), Some(b));
        }
        let mut names: Vec<_> = Bug::ALL.iter().map(|b| b.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Bug::ALL.len());
    }

    #[cfg(not(feature = "planted-bugs"))]
    #[test]
    fn no_bug_is_live_without_the_feature() {
        assert!(Bug::ALL.iter().all(|&b| !active(b)));
    }
}
