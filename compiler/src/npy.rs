//! Reading and writing numpy `.npy` files (format version 1.0/2.0, little-endian, C order).

use tessera_ir::{DType, Tensor};

fn descr(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::Bool => "|b1",
        DType::BF16 => return None,
    })
}

pub fn write(t: &Tensor) -> Result<Vec<u8>, String> {
    let d = descr(t.dtype()).ok_or_else(|| format!("{} has no .npy type", t.dtype()))?;
    let shape = match t.shape().len() {
        0 => "()".to_string(),
        1 => format!("({},)", t.shape()[0]),
        _ => format!(
            "({})",
            t.shape()
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{d}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary; the header ends with a newline.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(t.bytes());
    Ok(out)
}

pub fn read(bytes: &[u8]) -> Result<Tensor, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file".into());
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = std::str::from_utf8(bytes.get(start..start + hlen).ok_or("truncated header")?)
        .map_err(|_| "header is not UTF-8")?;
    let field = |k: &str| -> Result<&str, String> {
        let i = header
            .find(&format!("'{k}'"))
            .ok_or_else(|| format!("header lacks `{k}`"))?;
        Ok(header[i + k.len() + 2..].trim_start_matches([':', ' ']))
    };
    let d = field("descr")?;
    let d = d.trim_start_matches('\'');
    let d = &d[..d.find('\'').ok_or("bad descr")?];
    let dtype = DType::ALL
        .into_iter()
        .find(|&x| {
            descr(x).is_some_and(|s| s == d || (s.starts_with('<') && s.replace('<', "=") == d))
        })
        .ok_or_else(|| format!("unsupported dtype `{d}`"))?;
    if field("fortran_order")?.starts_with("True") {
        return Err("Fortran-order arrays are not supported".into());
    }
    let s = field("shape")?;
    let s = &s[s.find('(').ok_or("bad shape")? + 1..s.find(')').ok_or("bad shape")?];
    let shape = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<usize>()
                .map_err(|_| format!("bad dimension `{x}`"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Tensor::from_bytes(dtype, shape, bytes[start + hlen..].to_vec()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn roundtrip() {
        let t = tessera_ir::Rng::new(1).tensor(tessera_ir::DType::F32, vec![2, 3]);
        assert_eq!(super::read(&super::write(&t).unwrap()).unwrap(), t);
        let s = tessera_ir::Tensor::scalar_f32(2.5);
        assert_eq!(super::read(&super::write(&s).unwrap()).unwrap(), s);
    }
}
