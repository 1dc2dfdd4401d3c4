//! The CUDA device probe. cudarc loads libcuda dynamically and panics on first use when it is
//! missing, so we check for the library first and turn its absence into a typed error.

use crate::error::RuntimeError;

/// Name and count of the CUDA devices, or why there are none.
#[derive(Clone, Debug)]
pub struct CudaInfo {
    pub devices: usize,
    pub name: String,
}

pub fn probe() -> Result<CudaInfo, RuntimeError> {
    // SAFETY: only tries to dlopen libcuda; no CUDA call is made if it is absent.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(RuntimeError::NoCuda(
            "no CUDA driver library (libcuda.so) on this machine".into(),
        ));
    }
    let n = cudarc::driver::CudaContext::device_count()
        .map_err(|e| RuntimeError::NoCuda(format!("driver error: {e:?}")))?;
    if n <= 0 {
        return Err(RuntimeError::NoCuda("the driver reports no devices".into()));
    }
    let ctx = cudarc::driver::CudaContext::new(0)
        .map_err(|e| RuntimeError::NoCuda(format!("cannot open device 0: {e:?}")))?;
    let name = ctx
        .name()
        .map_err(|e| RuntimeError::NoCuda(format!("{e:?}")))?;
    Ok(CudaInfo {
        devices: n as usize,
        name,
    })
}
