//! Dense tensors: an element type, a static shape and little-endian bytes.
//!
//! Values are stored as raw bytes so that every dtype shares one representation that the
//! runtime can hand to compiled kernels without conversion. The reference interpreter reads
//! them as `f64` (floats) or `i64` (integers and bool) and writes results back rounded to the
//! tensor's dtype, which keeps each op's definition short and obviously correct.

use crate::dtype::DType;
use crate::error::IrError;

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// Largest element count a tensor may have (2^30): larger shapes in a model are rejected with
/// a typed error before anything is allocated.
pub const MAX_ELEMENTS: usize = 1 << 30;

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Checked element count: `None` on overflow or above [`MAX_ELEMENTS`].
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    let mut n: usize = 1;
    for &d in shape {
        n = n.checked_mul(d)?;
    }
    (n <= MAX_ELEMENTS).then_some(n)
}

/// Row-major strides (in elements) of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

impl Tensor {
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<Tensor, IrError> {
        let n = checked_numel(&shape)
            .ok_or_else(|| IrError::Shape(format!("tensor shape {shape:?} is too large")))?;
        if bytes.len() != n * dtype.size() {
            return Err(IrError::Shape(format!(
                "tensor of {dtype}{shape:?} needs {} bytes, got {}",
                n * dtype.size(),
                bytes.len()
            )));
        }
        Ok(Tensor {
            dtype,
            shape,
            bytes,
        })
    }

    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = numel(&shape);
        Tensor {
            dtype,
            shape,
            bytes: vec![0; n * dtype.size()],
        }
    }

    /// A tensor whose float elements are all NaN (integers: a recognisable junk pattern).
    /// Used to poison outputs before a kernel writes them, so unwritten elements cannot pass.
    pub fn poisoned(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = numel(&shape);
        Tensor::from_f64(dtype, shape, &vec![f64::NAN; n])
    }

    /// Builds a tensor from f64 values, rounding each to `dtype`. NaN becomes a junk
    /// pattern for integer types (0x5A bytes) so poisoning is visible there too.
    pub fn from_f64(dtype: DType, shape: Vec<usize>, values: &[f64]) -> Tensor {
        debug_assert_eq!(values.len(), numel(&shape));
        let mut bytes = Vec::with_capacity(values.len() * dtype.size());
        for &v in values {
            if v.is_nan() && !dtype.is_float() {
                bytes.extend(std::iter::repeat_n(0x5A, dtype.size()));
                continue;
            }
            push_f64(&mut bytes, dtype, v);
        }
        Tensor {
            dtype,
            shape,
            bytes,
        }
    }

    /// Builds a tensor from i64 values, wrapping each to `dtype` (floats convert).
    pub fn from_i64(dtype: DType, shape: Vec<usize>, values: &[i64]) -> Tensor {
        debug_assert_eq!(values.len(), numel(&shape));
        let mut bytes = Vec::with_capacity(values.len() * dtype.size());
        for &v in values {
            if dtype.is_float() {
                push_f64(&mut bytes, dtype, v as f64);
            } else {
                push_i64(&mut bytes, dtype, v);
            }
        }
        Tensor {
            dtype,
            shape,
            bytes,
        }
    }

    pub fn scalar_f32(v: f32) -> Tensor {
        Tensor::from_f64(DType::F32, vec![], &[v as f64])
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
    pub fn len(&self) -> usize {
        numel(&self.shape)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Same data, new shape (element counts must agree).
    pub fn reshaped(mut self, shape: Vec<usize>) -> Result<Tensor, IrError> {
        if numel(&shape) != self.len() {
            return Err(IrError::Shape(format!(
                "cannot reshape {:?} to {shape:?}",
                self.shape
            )));
        }
        self.shape = shape;
        Ok(self)
    }

    pub fn get_f64(&self, i: usize) -> f64 {
        let s = self.dtype.size();
        let b = &self.bytes[i * s..(i + 1) * s];
        match self.dtype {
            DType::F32 => f32::from_le_bytes(b.try_into().unwrap()) as f64,
            DType::F64 => f64::from_le_bytes(b.try_into().unwrap()),
            DType::F16 => half::f16::from_le_bytes(b.try_into().unwrap()).to_f64(),
            DType::BF16 => half::bf16::from_le_bytes(b.try_into().unwrap()).to_f64(),
            _ => self.get_i64(i) as f64,
        }
    }

    pub fn get_i64(&self, i: usize) -> i64 {
        let s = self.dtype.size();
        let b = &self.bytes[i * s..(i + 1) * s];
        match self.dtype {
            DType::I64 => i64::from_le_bytes(b.try_into().unwrap()),
            DType::I32 => i32::from_le_bytes(b.try_into().unwrap()) as i64,
            DType::I8 => b[0] as i8 as i64,
            DType::U8 => b[0] as i64,
            DType::Bool => (b[0] != 0) as i64,
            _ => self.get_f64(i) as i64,
        }
    }

    pub fn to_f64_vec(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.get_f64(i)).collect()
    }

    pub fn to_i64_vec(&self) -> Vec<i64> {
        (0..self.len()).map(|i| self.get_i64(i)).collect()
    }

    /// Converts element-wise to another dtype with ONNX `Cast` semantics.
    pub fn cast(&self, to: DType) -> Tensor {
        if self.dtype.is_float() {
            let v = self.to_f64_vec();
            if to.is_float() {
                return Tensor::from_f64(to, self.shape.clone(), &v);
            }
            let ints: Vec<i64> = v
                .iter()
                .map(|&x| {
                    if to == DType::Bool {
                        (x != 0.0) as i64
                    } else {
                        x as i64
                    }
                })
                .collect();
            return Tensor::from_i64(to, self.shape.clone(), &ints);
        }
        Tensor::from_i64(to, self.shape.clone(), &self.to_i64_vec())
    }
}

fn push_f64(bytes: &mut Vec<u8>, dtype: DType, v: f64) {
    match dtype {
        DType::F32 => bytes.extend((v as f32).to_le_bytes()),
        DType::F64 => bytes.extend(v.to_le_bytes()),
        DType::F16 => bytes.extend(half::f16::from_f64(v).to_le_bytes()),
        DType::BF16 => bytes.extend(half::bf16::from_f64(v).to_le_bytes()),
        DType::Bool => bytes.push((v != 0.0) as u8),
        _ => push_i64(bytes, dtype, v as i64),
    }
}

fn push_i64(bytes: &mut Vec<u8>, dtype: DType, v: i64) {
    match dtype {
        DType::I64 => bytes.extend(v.to_le_bytes()),
        DType::I32 => bytes.extend((v as i32).to_le_bytes()),
        DType::I8 => bytes.push(v as i8 as u8),
        DType::U8 => bytes.push(v as u8),
        DType::Bool => bytes.push((v != 0) as u8),
        _ => push_f64(bytes, dtype, v as f64),
    }
}

/// A small deterministic random generator (SplitMix64) for test inputs: the crates that
/// need "fresh random inputs" share it so a seed reproduces a failure exactly.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A random tensor with no zeros for floats (values in ±[0.1, 1]) and small integers.
    pub fn tensor(&mut self, dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = numel(&shape);
        if dtype.is_float() {
            let v: Vec<f64> = (0..n)
                .map(|_| {
                    let m = self.range(0.1, 1.0);
                    if self.next_u64() & 1 == 0 { m } else { -m }
                })
                .collect();
            Tensor::from_f64(dtype, shape, &v)
        } else if dtype == DType::Bool {
            let v: Vec<i64> = (0..n).map(|_| (self.next_u64() & 1) as i64).collect();
            Tensor::from_i64(dtype, shape, &v)
        } else {
            let v: Vec<i64> = (0..n).map(|_| self.below(9) as i64 + 1).collect();
            Tensor::from_i64(dtype, shape, &v)
        }
    }
}
