//! An OpenAI request body through the endpoint's decoder (JSON extraction,
//! then field validation). The first byte picks the endpoint.
#![no_main]

use api::http::{OpenAiEndpoint, decode_openai_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let endpoint = if which & 1 == 0 {
        OpenAiEndpoint::Chat
    } else {
        OpenAiEndpoint::Completions
    };
    let _ = decode_openai_request(endpoint, body);
});
