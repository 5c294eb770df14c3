//! A whole safetensors file through the registry's header check.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hub::registry::check_safetensors_bytes(data);
});
