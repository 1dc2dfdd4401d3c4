//! The TMA epilogue of warp-specialised tensor-core products (whole tiles and sub-tiles
//! through shared memory): against the plain kernel on the interpreter, refused when broken,
//! through ptxas.

use super::*;

/// The TMA epilogue (`MmaEpilogue::TensorStore`): a persistent cooperative pipeline (3
/// blocks over 4 tiles: block 0 stores twice, waiting for its first stores' reads before it
/// writes its tile again) and a ping-pong one (one block: each team stores twice) write
/// their tiles to shared memory and store them by TMA, agreeing with the plain kernel; the
/// interpreter refuses them without their fences or their waits for the stores' reads; the
/// PTX stores through a tensor map over the output and passes ptxas.
#[test]
fn a_tma_epilogue_stores_each_tile_through_shared_memory() {
    use tessera_ir::loops::tma::AsyncProxy;
    use tessera_passes::gpu_mma::MmaEpilogue;
    for (blocks, consumers) in [(3, Consumers::Cooperative), (1, Consumers::PingPong)] {
        let what = format!("{consumers:?} on {blocks} block(s)");
        let (tiled, inputs) = checked_product_with([256, 64, 128], |t| GpuMmaTiling {
            staging: MmaStaging::WarpSpecialized {
                stages: 2,
                persistent_blocks: blocks,
                consumers,
            },
            epilogue: MmaEpilogue::TensorStore,
            bn: 64,
            ..t
        });
        if let Some(dir) = std::env::var_os("TESSERA_DUMP") {
            std::fs::write(
                std::path::Path::new(&dir).join(format!("{blocks}.tess")),
                tiled.to_string(),
            )
            .unwrap();
        }
        let stores = count(&tiled.body, &|s| matches!(s, Stmt::TensorStore(_)));
        assert_eq!(stores, 1, "{what}: one box per warpgroup's 64 columns");
        let out_stores = count(
            &tiled.body,
            &|s| matches!(s, Stmt::Store { buf, .. } if buf == "y"),
        );
        assert_eq!(out_stores, 0, "{what}: no direct store of the output");
        let replace = |from: AsyncProxy, to: AsyncProxy| {
            let mut broken = tiled.clone();
            edit_stmts(&mut broken.body, &|s| match s {
                Stmt::AsyncProxy(a) if *a == from => {
                    *a = to.clone();
                    true
                }
                _ => false,
            });
            broken
        };
        let wait = AsyncProxy::WaitRead { pending: 0 };
        let no_fence = replace(AsyncProxy::Fence, AsyncProxy::WaitRead { pending: 8 });
        let no_wait = replace(wait.clone(), AsyncProxy::Fence);
        assert_refused(&no_fence, &tiled, &inputs, &["no fence_proxy_async"], &what);
        assert_refused(
            &no_wait,
            &tiled,
            &inputs,
            &["tensor store still reads"],
            &what,
        );
        if ptxas_or_skip("a_tma_epilogue_stores_each_tile_through_shared_memory").is_some() {
            let module = sm90_ptx(&tiled);
            assert!(
                module.text.contains(".global.shared::cta.bulk_group"),
                "{what}"
            );
            let maps = &module.kernels[0].tensor_maps;
            assert_eq!(maps.len(), 3, "{what}: A, B and the output");
            assert_ptxas_keeps_the_steps_async(&module.text);
        }
    }
    // A batch of products: the boxes are 3-D (one batch element deep).
    let (tiled, _) = checked_batched_product(&[2], [128, 64, 128], |t| GpuMmaTiling {
        staging: MmaStaging::WarpSpecialized {
            stages: 2,
            persistent_blocks: 3,
            consumers: Consumers::Cooperative,
        },
        epilogue: MmaEpilogue::TensorStore,
        bn: 64,
        ..t
    });
    let mut ranks = Vec::new();
    tessera_ir::loops::each_stmt(&tiled.body, &mut |s| {
        if let Stmt::TensorStore(c) = s {
            ranks.push(c.map.extents.len());
        }
    });
    assert_eq!(ranks, [3], "one 3-D tensor store");
}

/// The TMA epilogue through sub-tiles (`MmaEpilogue::TensorStoreSubTiles`): a cooperative
/// block over two 128×256 tiles, each warpgroup's 64×256 storing as four 64-column atoms
/// through two buffers — so the third atom's writes wait for the first's store (inside a
/// round) and the next round's first for the last round's third — agrees with the plain
/// kernel; the interpreter refuses it when the first thread lets two stores read on
/// (`pending(2)`) before a buffer is written again; the PTX passes ptxas.
#[test]
fn a_sub_tiled_tma_epilogue_takes_its_two_buffers_in_turn() {
    use tessera_ir::loops::tma::AsyncProxy;
    use tessera_passes::gpu_mma::MmaEpilogue;
    let (tiled, inputs) = checked_product_with([128, 64, 512], |t| GpuMmaTiling {
        staging: MmaStaging::WarpSpecialized {
            stages: 2,
            persistent_blocks: 1,
            consumers: Consumers::Cooperative,
        },
        epilogue: MmaEpilogue::TensorStoreSubTiles,
        bm: 128,
        bn: 256,
        warps_m: 2,
        warps_n: 1,
        ..t
    });
    if let Some(dir) = std::env::var_os("TESSERA_DUMP") {
        std::fs::write(
            std::path::Path::new(&dir).join("sub.tess"),
            tiled.to_string(),
        )
        .unwrap();
    }
    let stores = count(&tiled.body, &|s| matches!(s, Stmt::TensorStore(_)));
    assert_eq!(stores, 4, "one box per atom, one atom per batch");
    let shared: Vec<usize> = tiled
        .buffers
        .iter()
        .filter(|b| {
            b.role == tessera_ir::loops::BufRole::Shared && b.dtype == tessera_ir::DType::F16
        })
        .map(|b| b.len)
        .collect();
    assert!(
        shared.contains(&(2 * 2 * 64 * 64)),
        "two 64×64 buffers per warpgroup, not the 128×256 tile: {shared:?}"
    );
    let waits = |pending| {
        count(
            &tiled.body,
            &|s| matches!(s, Stmt::AsyncProxy(AsyncProxy::WaitRead { pending: p }) if *p == pending),
        )
    };
    assert_eq!(
        waits(1),
        4,
        "before each atom's writes, the store before last done"
    );
    let mut eager = tiled.clone();
    edit_stmts(&mut eager.body, &|s| match s {
        Stmt::AsyncProxy(AsyncProxy::WaitRead { pending }) if *pending == 1 => {
            *pending = 2;
            true
        }
        _ => false,
    });
    assert_refused(
        &eager,
        &tiled,
        &inputs,
        &["tensor store still reads"],
        "pending(2)",
    );
    if ptxas_or_skip("a_sub_tiled_tma_epilogue_takes_its_two_buffers_in_turn").is_some() {
        let module = sm90_ptx(&tiled);
        assert_eq!(
            module.kernels[0].tensor_maps.len(),
            3,
            "A, B and the output"
        );
        assert_ptxas_keeps_the_steps_async(&module.text);
    }
}
