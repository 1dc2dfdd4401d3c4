//! Encoding a kernel's tensor maps (see `tessera_ir::loops::tma`) for the device addresses
//! its arguments got: `cuTensorMapEncodeTiled` on the host, the 128-byte results uploaded as
//! the one array the kernel takes after its buffers.
//!
//! The geometry comes from the compiler ([`GpuTensorMap`]): the tensor's extents innermost
//! first, its strides in elements (here in bytes), the box, the swizzle. Elements outside the
//! tensor read as zeros (`OOB_FILL_NONE`), which is what the interpreter's copies land.

use crate::error::RuntimeError;
use cudarc::driver::sys;
use tessera_ir::DType;
use tessera_ir::loops::tma::TENSOR_MAP_BYTES;
use tessera_ir::plan::GpuTensorMap;

/// The tensor-map element type of `dtype` (bytes move as they are: one of the same width
/// serves integers and bools).
fn data_type(dtype: DType) -> sys::CUtensorMapDataType {
    use sys::CUtensorMapDataType::*;
    match dtype {
        DType::F16 => CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        DType::BF16 => CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        DType::F32 => CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
        DType::F64 => CU_TENSOR_MAP_DATA_TYPE_FLOAT64,
        DType::I64 => CU_TENSOR_MAP_DATA_TYPE_INT64,
        DType::I32 => CU_TENSOR_MAP_DATA_TYPE_INT32,
        DType::I8 | DType::U8 | DType::Bool => CU_TENSOR_MAP_DATA_TYPE_UINT8,
    }
}

/// The encoded map of `m` over the argument at device address `base`.
pub fn encode(m: &GpuTensorMap, base: u64) -> Result<[u8; TENSOR_MAP_BYTES], RuntimeError> {
    let map = &m.map;
    let elem = map.dtype.size() as u64;
    let rank = map.extents.len();
    let bad = |msg: String| RuntimeError::Cuda(format!("tensor map over `{}`: {msg}", map.src));
    if map.strides.len() + 1 != rank || map.box_dims.len() != rank {
        return Err(bad(format!(
            "{rank} extents, {} strides",
            map.strides.len()
        )));
    }
    let dims: Vec<u64> = map.extents.iter().map(|&e| e as u64).collect();
    let strides: Vec<u64> = map.strides.iter().map(|&s| s as u64 * elem).collect();
    let boxes: Vec<u32> = map.box_dims.iter().map(|&b| b as u32).collect();
    let element_strides = vec![1u32; rank];
    let address = base + map.origin as u64 * elem;
    let mut out = sys::CUtensorMap { opaque: [0; 16] };
    let swizzle = match map.swizzle {
        true => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
        false => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
    };
    // SAFETY: every pointer refers to a live local array of `rank` (strides: `rank − 1`)
    // entries, as the function reads them; `out` is a writable, 64-byte-aligned
    // `CUtensorMap`. The caller checked that a driver is loaded (`GpuExecutable::load`).
    let result = unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut out,
            data_type(map.dtype),
            rank as u32,
            address as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            element_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    if result != sys::CUresult::CUDA_SUCCESS {
        return Err(bad(format!(
            "cuTensorMapEncodeTiled: {result:?} (extents {:?}, strides {:?}, box {:?})",
            map.extents, map.strides, map.box_dims
        )));
    }
    let mut bytes = [0u8; TENSOR_MAP_BYTES];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(out.opaque) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    Ok(bytes)
}
