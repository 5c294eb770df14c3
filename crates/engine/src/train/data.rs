//! Datasets as mlx-lm's `tuner/datasets.py` reads them, and batches as its
//! `iterate_batches` makes them.
//!
//! A dataset is a folder with `train.jsonl` (required), `valid.jsonl` and `test.jsonl`.
//! The format is detected from the first row of each file, in mlx-lm's order:
//! `prompt`+`completion` (rendered as a user/assistant chat), `messages` (chat, with
//! optional `tools`), `text` (EOS appended). Every line of every file is validated and
//! tokenized before training starts; an error names the file, the line and the problem.

use std::path::{Path, PathBuf};

use mlx::Array;
use serde_json::{Map, Value};

use super::format::{JsonKind, RowError, RowRules, detect_format, validate_row};
use super::{Result, TrainError};
use crate::tokenizer::Tokenizer;

pub use super::format::{DataFormat, DataKeys};

/// One tokenized row: its tokens and the number of leading prompt tokens excluded
/// from the loss (0 unless `mask_prompt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub offset: usize,
}

/// A tokenized split.
#[derive(Debug, Clone)]
pub struct Split {
    pub file: PathBuf,
    pub format: DataFormat,
    pub examples: Vec<Example>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.examples.len()
    }
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }
    pub fn num_tokens(&self) -> usize {
        self.examples.iter().map(|e| e.tokens.len()).sum()
    }
    /// Rows longer than `max_seq_length` tokens (they are truncated in batches).
    pub fn count_longer_than(&self, max_seq_length: usize) -> usize {
        self.examples
            .iter()
            .filter(|e| e.tokens.len() > max_seq_length)
            .count()
    }
}

/// The splits of a dataset folder.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub train: Split,
    pub valid: Option<Split>,
    pub test: Option<Split>,
}

/// Options of [`load_dataset`].
#[derive(Debug, Clone, Default)]
pub struct DataOptions {
    pub keys: DataKeys,
    pub mask_prompt: bool,
}

fn data_err(file: &Path, line: usize, message: impl Into<String>) -> TrainError {
    TrainError::Data {
        file: file.display().to_string(),
        line,
        message: message.into(),
    }
}

/// Loads and tokenizes `dir/{train,valid,test}.jsonl`. `train.jsonl` must exist and
/// hold at least one row; the others are optional.
pub fn load_dataset(dir: &Path, tokenizer: &Tokenizer, opts: &DataOptions) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(TrainError::Invalid(format!(
            "dataset folder {} does not exist",
            dir.display()
        )));
    }
    let train_path = dir.join("train.jsonl");
    if !train_path.is_file() {
        return Err(TrainError::Invalid(format!(
            "{}: training set not found (a dataset folder needs train.jsonl)",
            train_path.display()
        )));
    }
    let load = |name: &str| -> Result<Option<Split>> {
        let p = dir.join(format!("{name}.jsonl"));
        if p.is_file() {
            load_split(&p, tokenizer, opts).map(Some)
        } else {
            Ok(None)
        }
    };
    let train = load("train")?.expect("checked above");
    let valid = load("valid")?;
    let test = load("test")?;
    Ok(Dataset { train, valid, test })
}

/// Reads, validates and tokenizes one JSONL file.
pub fn load_split(path: &Path, tokenizer: &Tokenizer, opts: &DataOptions) -> Result<Split> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    parse_split(path, &text, tokenizer, opts)
}

/// Validates and tokenizes the text of a JSONL file (`path` names it in errors).
pub fn parse_split(
    path: &Path,
    text: &str,
    tokenizer: &Tokenizer,
    opts: &DataOptions,
) -> Result<Split> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| data_err(path, n, RowError::InvalidJson(e.to_string()).to_string()))?;
        let obj = match v {
            Value::Object(obj) => obj,
            other => {
                let e = RowError::NotAnObject(JsonKind::of(&other));
                return Err(data_err(path, n, e.to_string()));
            }
        };
        rows.push((n, obj));
    }
    let Some((first_line, first)) = rows.first() else {
        return Err(data_err(path, 1, "the file is empty (no rows)"));
    };
    let format =
        detect_format(first, &opts.keys).map_err(|e| data_err(path, *first_line, e.to_string()))?;
    if format == DataFormat::Text && opts.mask_prompt {
        return Err(data_err(
            path,
            *first_line,
            "prompt masking is not supported for a text dataset",
        ));
    }
    let rules = RowRules {
        keys: opts.keys.clone(),
        mask_prompt: opts.mask_prompt,
        known_roles_only: false,
    };
    // Validate every row before tokenizing anything.
    for (n, obj) in &rows {
        validate_row(obj, format, &rules).map_err(|e| data_err(path, *n, e.to_string()))?;
    }
    let eos = tokenizer
        .eos_token()
        .and_then(|t| tokenizer.token_to_id(t))
        .or_else(|| tokenizer.eos_token_ids().first().copied());
    let mut examples = Vec::with_capacity(rows.len());
    for (n, obj) in &rows {
        let ex =
            tokenize_row(obj, format, opts, tokenizer, eos).map_err(|m| data_err(path, *n, m))?;
        if ex.tokens.is_empty() {
            return Err(data_err(path, *n, "the row has no tokens"));
        }
        examples.push(ex);
    }
    Ok(Split {
        file: path.to_path_buf(),
        format,
        examples,
    })
}

fn tokenize_row(
    obj: &Map<String, Value>,
    format: DataFormat,
    opts: &DataOptions,
    tok: &Tokenizer,
    eos: Option<u32>,
) -> std::result::Result<Example, String> {
    let k = &opts.keys;
    let tools: Option<Vec<Value>> = obj.get("tools").and_then(|t| t.as_array().cloned());
    let tools = tools.as_deref();
    let chat = |msgs: &[Value], add_gen: bool| {
        tok.encode_chat(msgs, add_gen, tools)
            .map_err(|e| e.to_string())
    };
    match format {
        DataFormat::Text => {
            let text = obj[&k.text].as_str().unwrap_or_default();
            let mut tokens = tok.encode(text, true).map_err(|e| e.to_string())?;
            if let Some(eos) = eos
                && tokens.last() != Some(&eos)
            {
                tokens.push(eos);
            }
            Ok(Example { tokens, offset: 0 })
        }
        DataFormat::Completions => {
            let msgs = vec![
                serde_json::json!({"role": "user", "content": obj[&k.prompt]}),
                serde_json::json!({"role": "assistant", "content": obj[&k.completion]}),
            ];
            let tokens = chat(&msgs, false)?;
            let offset = if opts.mask_prompt {
                chat(&msgs[..1], true)?.len()
            } else {
                0
            };
            Ok(Example { tokens, offset })
        }
        DataFormat::Chat => {
            let msgs = obj[&k.chat].as_array().cloned().unwrap_or_default();
            let tokens = chat(&msgs, false)?;
            let offset = if opts.mask_prompt {
                let add_gen = msgs
                    .last()
                    .and_then(|m| m.get("role"))
                    .and_then(Value::as_str)
                    == Some("assistant");
                chat(&msgs[..msgs.len() - 1], add_gen)?.len()
            } else {
                0
            };
            Ok(Example { tokens, offset })
        }
    }
}

/// numpy's legacy `RandomState` (MT19937 seeded with `init_genrand`), enough of it
/// for `np.random.seed(s)` + `np.random.permutation(n)`, so the batch order is the
/// one mlx-lm draws for the same seed.
#[derive(Debug, Clone)]
pub struct NumpyRng {
    mt: [u32; 624],
    pos: usize,
}

impl NumpyRng {
    pub fn new(seed: u32) -> NumpyRng {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1812433253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        NumpyRng { mt, pos: 624 }
    }

    fn generate(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..624 {
            let y = (self.mt[i] & UPPER) | (self.mt[(i + 1) % 624] & LOWER);
            let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.mt[i] = v;
        }
        self.pos = 0;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            self.generate();
        }
        let mut y = self.mt[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// numpy's `random_interval(max)`: uniform in `0..=max` by masked rejection.
    fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for s in [1, 2, 4, 8, 16] {
            mask |= mask >> s;
        }
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `np.random.permutation(n)` (a Fisher–Yates shuffle of `0..n`, from the end).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u32) as usize;
            v.swap(i, j);
        }
        v
    }
}

/// A padded batch: `tokens` `[B, T]` int32 and `lengths` `[B, 2]` int32 rows of
/// `(offset, length)`, as `iterate_batches` yields them.
#[derive(Debug, Clone)]
pub struct Batch {
    pub tokens: Array,
    pub lengths: Array,
    /// Tokens in the batch before padding (after truncation).
    pub num_tokens: usize,
    /// Rows that were truncated to `max_seq_length`.
    pub truncated: usize,
}

/// Batches of a split exactly as mlx-lm's `iterate_batches`: rows sorted by length
/// (stable), grouped into consecutive batches of `batch_size` (the remainder dropped),
/// batches visited in the order of a permutation drawn per epoch from `rng`; each padded
/// with zeros to `1 + 32·⌈max_len/32⌉` capped at `max_seq_length`.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    batches: Vec<Vec<usize>>,
    order: Vec<usize>,
    pos: usize,
    batch_size: usize,
    max_seq_length: usize,
}

impl BatchPlan {
    pub fn new(split: &Split, batch_size: usize, max_seq_length: usize) -> Result<BatchPlan> {
        if batch_size == 0 {
            return Err(TrainError::Invalid("batch size must be at least 1".into()));
        }
        if split.len() < batch_size {
            return Err(TrainError::Invalid(format!(
                "{}: dataset must have at least batch_size={batch_size} examples but only has {}",
                split.file.display(),
                split.len()
            )));
        }
        let mut idx: Vec<usize> = (0..split.len()).collect();
        idx.sort_by_key(|&i| split.examples[i].tokens.len());
        let batches = idx
            .chunks_exact(batch_size)
            .map(|c| c.to_vec())
            .collect::<Vec<_>>();
        let n = batches.len();
        Ok(BatchPlan {
            batches,
            order: Vec::new(),
            pos: n,
            batch_size,
            max_seq_length,
        })
    }

    /// Number of batches per epoch.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The next batch, drawing a new epoch order from `rng` when the last one is done
    /// (`loop=True`). Use [`BatchPlan::epoch`] for a single pass.
    pub fn next_looping(&mut self, split: &Split, rng: &mut NumpyRng) -> Result<Batch> {
        if self.pos >= self.order.len() {
            self.order = rng.permutation(self.batches.len());
            self.pos = 0;
        }
        let b = self.order[self.pos];
        self.pos += 1;
        self.make(split, b)
    }

    /// One pass (`loop=False`): batch indices in a freshly drawn order.
    pub fn epoch(&self, rng: &mut NumpyRng) -> Vec<usize> {
        rng.permutation(self.batches.len())
    }

    /// Builds batch number `b` (an index into the length-sorted batches).
    pub fn make(&self, split: &Split, b: usize) -> Result<Batch> {
        let rows: Vec<&Example> = self.batches[b]
            .iter()
            .map(|&i| &split.examples[i])
            .collect();
        let max_len = rows.iter().map(|e| e.tokens.len()).max().unwrap_or(0);
        let pad_to = 32;
        let width = (1 + pad_to * max_len.div_ceil(pad_to)).min(self.max_seq_length);
        let mut data = vec![0i32; self.batch_size * width];
        let mut lengths = Vec::with_capacity(2 * self.batch_size);
        let mut num_tokens = 0;
        let mut truncated = 0;
        for (j, e) in rows.iter().enumerate() {
            let len = e.tokens.len().min(self.max_seq_length);
            if e.tokens.len() > self.max_seq_length {
                truncated += 1;
            }
            for (d, &t) in data[j * width..j * width + len].iter_mut().zip(&e.tokens) {
                *d = t as i32;
            }
            lengths.push(e.offset as i32);
            lengths.push(len as i32);
            num_tokens += len;
        }
        Ok(Batch {
            tokens: Array::from_slice(&data, &[self.batch_size as i32, width as i32])?,
            lengths: Array::from_slice(&lengths, &[self.batch_size as i32, 2])?,
            num_tokens,
            truncated,
        })
    }
}
