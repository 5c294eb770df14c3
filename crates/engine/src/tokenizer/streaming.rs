//! Streaming detokenization: ids in one at a time, text out in pieces that never end
//! in the middle of a UTF-8 character.
//!
//! The decoder runs over a small window of recent ids: `prefix` (already emitted, kept
//! for context such as a leading space that a decoder strips at the start of a text)
//! and the pending ids after it. New text is emitted only when decoding the window
//! grows the text and does not end in U+FFFD — the replacement character that both
//! byte-level (GPT-2) and byte-fallback (`<0xE2>`) decoding produce for an incomplete
//! multi-byte sequence.

use std::sync::Arc;

use super::TokenizerError;

/// Turns a stream of token ids into text pieces, holding back incomplete characters.
pub struct StreamingDetokenizer {
    tokenizer: Arc<tokenizers::Tokenizer>,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    text: String,
}

impl std::fmt::Debug for StreamingDetokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingDetokenizer")
            .field("tokens", &self.ids.len())
            .field("prefix_offset", &self.prefix_offset)
            .field("read_offset", &self.read_offset)
            .finish()
    }
}

impl StreamingDetokenizer {
    pub(crate) fn new(tokenizer: Arc<tokenizers::Tokenizer>, skip_special_tokens: bool) -> Self {
        Self {
            tokenizer,
            skip_special_tokens,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            text: String::new(),
        }
    }

    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.tokenizer
            .decode(ids, self.skip_special_tokens)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// Add one token; returns the text it completes, if any.
    pub fn add_token(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.ids.push(id);
        let prefix_text = self.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let new_text = self.decode(&self.ids[self.prefix_offset..])?;
        if new_text.len() <= prefix_text.len() || new_text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let piece = if new_text.starts_with(&prefix_text) {
            &new_text[prefix_text.len()..]
        } else {
            // A decoder that rewrote the prefix in context (rare): emit what follows the
            // common part, at a character boundary.
            let common = common_prefix_len(&prefix_text, &new_text);
            &new_text[common..]
        };
        let piece = piece.to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        self.text.push_str(&piece);
        Ok(Some(piece))
    }

    /// Emit whatever is still held back (at the end of generation). A sequence that is
    /// really broken comes out with U+FFFD in it.
    pub fn flush(&mut self) -> Result<Option<String>, TokenizerError> {
        if self.read_offset == self.ids.len() {
            return Ok(None);
        }
        let prefix_text = self.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let new_text = self.decode(&self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        let common = if new_text.starts_with(&prefix_text) {
            prefix_text.len()
        } else {
            common_prefix_len(&prefix_text, &new_text)
        };
        let piece = new_text[common..].to_string();
        if piece.is_empty() {
            return Ok(None);
        }
        self.text.push_str(&piece);
        Ok(Some(piece))
    }

    /// All text emitted so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// All ids added so far.
    pub fn tokens(&self) -> &[u32] {
        &self.ids
    }

    /// Start over (same tokenizer and options).
    pub fn reset(&mut self) {
        self.ids.clear();
        self.prefix_offset = 0;
        self.read_offset = 0;
        self.text.clear();
    }
}

fn common_prefix_len(a: &str, b: &str) -> usize {
    let mut n = 0;
    for ((i, ca), cb) in a.char_indices().zip(b.chars()) {
        if ca != cb {
            return i;
        }
        n = i + ca.len_utf8();
    }
    n
}
