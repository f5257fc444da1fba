//! A minimal GGUF (version 3) writer: metadata key/values and F32 tensors. Enough to hand a
//! safetensors model to llama.cpp, which then quantizes and runs it.

use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};
use std::path::Path;

const ALIGNMENT: u64 = 32;
const GGML_TYPE_F32: u32 = 0;

/// A metadata value.
pub enum Value {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
    F32Array(Vec<f32>),
    U8Array(Vec<u8>),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U32(_) => 4,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::StrArray(_) | Value::I32Array(_) | Value::F32Array(_) | Value::U8Array(_) => 9,
        }
    }
}

/// An F32 tensor: `dims` innermost first (GGUF order), `data` little-endian bytes.
pub struct Tensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub data: Vec<u8>,
}

fn write_str(out: &mut impl Write, s: &str) -> io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s.as_bytes())
}

fn write_value(out: &mut impl Write, value: &Value) -> io::Result<()> {
    out.write_all(&value.type_id().to_le_bytes())?;
    match value {
        Value::U32(v) => out.write_all(&v.to_le_bytes()),
        Value::F32(v) => out.write_all(&v.to_le_bytes()),
        Value::Bool(v) => out.write_all(&[u8::from(*v)]),
        Value::Str(s) => write_str(out, s),
        Value::StrArray(items) => {
            write_array_header(out, 8, items.len())?;
            items.iter().try_for_each(|s| write_str(out, s))
        }
        Value::I32Array(items) => {
            write_array_header(out, 5, items.len())?;
            items
                .iter()
                .try_for_each(|v| out.write_all(&v.to_le_bytes()))
        }
        Value::F32Array(items) => {
            write_array_header(out, 6, items.len())?;
            items
                .iter()
                .try_for_each(|v| out.write_all(&v.to_le_bytes()))
        }
        Value::U8Array(items) => {
            write_array_header(out, 0, items.len())?;
            out.write_all(items)
        }
    }
}

/// An array's element type (GGUF's type id) and length.
fn write_array_header(out: &mut impl Write, element_type: u32, len: usize) -> io::Result<()> {
    out.write_all(&element_type.to_le_bytes())?;
    out.write_all(&(len as u64).to_le_bytes())
}

fn pad_to_alignment(out: &mut (impl Write + Seek)) -> io::Result<()> {
    let position = out.stream_position()?;
    let padding = (ALIGNMENT - position % ALIGNMENT) % ALIGNMENT;
    out.write_all(&vec![0u8; padding as usize])
}

fn aligned(n: u64) -> u64 {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// Writes a complete GGUF file.
pub fn write(path: &Path, metadata: &[(&str, Value)], tensors: &[Tensor]) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    out.write_all(b"GGUF")?;
    out.write_all(&3u32.to_le_bytes())?;
    out.write_all(&(tensors.len() as u64).to_le_bytes())?;
    out.write_all(&(metadata.len() as u64).to_le_bytes())?;
    for (key, value) in metadata {
        write_str(&mut out, key)?;
        write_value(&mut out, value)?;
    }
    let mut offset = 0u64;
    for tensor in tensors {
        write_str(&mut out, &tensor.name)?;
        out.write_all(&(tensor.dims.len() as u32).to_le_bytes())?;
        for dim in &tensor.dims {
            out.write_all(&dim.to_le_bytes())?;
        }
        out.write_all(&GGML_TYPE_F32.to_le_bytes())?;
        out.write_all(&offset.to_le_bytes())?;
        offset += aligned(tensor.data.len() as u64);
    }
    pad_to_alignment(&mut out)?;
    for tensor in tensors {
        out.write_all(&tensor.data)?;
        pad_to_alignment(&mut out)?;
    }
    out.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_all()
}
