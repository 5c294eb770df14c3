use std::fmt;

/// Element types, with the codes of MLX's `Dtype::Val` (the shim's convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Dtype {
    Bool = 0,
    Uint8 = 1,
    Uint16 = 2,
    Uint32 = 3,
    Uint64 = 4,
    Int8 = 5,
    Int16 = 6,
    Int32 = 7,
    Int64 = 8,
    Float16 = 9,
    Float32 = 10,
    Float64 = 11,
    Bfloat16 = 12,
    Complex64 = 13,
}

impl Dtype {
    pub(crate) fn from_code(code: i32) -> Dtype {
        use Dtype::*;
        match code {
            0 => Bool,
            1 => Uint8,
            2 => Uint16,
            3 => Uint32,
            4 => Uint64,
            5 => Int8,
            6 => Int16,
            7 => Int32,
            8 => Int64,
            9 => Float16,
            10 => Float32,
            11 => Float64,
            12 => Bfloat16,
            _ => Complex64,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        use Dtype::*;
        match self {
            Bool | Uint8 | Int8 => 1,
            Uint16 | Int16 | Float16 | Bfloat16 => 2,
            Uint32 | Int32 | Float32 => 4,
            Uint64 | Int64 | Float64 | Complex64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            Dtype::Float16 | Dtype::Float32 | Dtype::Float64 | Dtype::Bfloat16
        )
    }

    pub fn is_integer(self) -> bool {
        !self.is_float() && !matches!(self, Dtype::Bool | Dtype::Complex64)
    }

    /// The name numpy, MLX's Python API and safetensors-in-mlx-lm use.
    pub fn name(self) -> &'static str {
        use Dtype::*;
        match self {
            Bool => "bool",
            Uint8 => "uint8",
            Uint16 => "uint16",
            Uint32 => "uint32",
            Uint64 => "uint64",
            Int8 => "int8",
            Int16 => "int16",
            Int32 => "int32",
            Int64 => "int64",
            Float16 => "float16",
            Float32 => "float32",
            Float64 => "float64",
            Bfloat16 => "bfloat16",
            Complex64 => "complex64",
        }
    }

    /// Parses the names used on command lines and in configs (`float16`, `bf16`, …).
    pub fn parse(name: &str) -> Option<Dtype> {
        use Dtype::*;
        Some(match name {
            "bool" => Bool,
            "uint8" | "u8" => Uint8,
            "uint16" | "u16" => Uint16,
            "uint32" | "u32" => Uint32,
            "uint64" | "u64" => Uint64,
            "int8" | "i8" => Int8,
            "int16" | "i16" => Int16,
            "int32" | "i32" => Int32,
            "int64" | "i64" => Int64,
            "float16" | "f16" | "half" => Float16,
            "float32" | "f32" | "float" => Float32,
            "float64" | "f64" | "double" => Float64,
            "bfloat16" | "bf16" => Bfloat16,
            "complex64" => Complex64,
            _ => return None,
        })
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rust element types that map one-to-one onto an MLX dtype (same size and layout).
pub trait Element: Copy + Send + Sync + 'static {
    const DTYPE: Dtype;
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {
        $(impl Element for $t { const DTYPE: Dtype = Dtype::$d; })*
    };
}
element!(
    bool => Bool, u8 => Uint8, u16 => Uint16, u32 => Uint32, u64 => Uint64,
    i8 => Int8, i16 => Int16, i32 => Int32, i64 => Int64,
    half::f16 => Float16, f32 => Float32, f64 => Float64, half::bf16 => Bfloat16,
);
