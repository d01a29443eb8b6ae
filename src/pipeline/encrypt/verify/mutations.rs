use std::path::Path;

#[test]
fn fuzz_invariants_hold_on_mutated_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/encrypted");
    let mut messages = Vec::new();
    for dir in [root.clone(), root.join("not")] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "eml") {
                messages.push(std::fs::read(path).unwrap());
            }
        }
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % u64::try_from(n.max(1)).unwrap()).unwrap()
    };
    let mut runs = 0;
    for message in &messages {
        let small = message.len() <= 16 * 1024;
        for round in 0..if small { 12 } else { 3 } {
            let mut m = message.clone();
            let at = next(m.len());
            match round % 4 {
                0 => m[at] ^= 1 << next(8),
                1 => drop(m.remove(at)),
                2 => m.insert(at, b"\r\n-=<&\x00\x80"[next(7)]),
                _ => m.truncate(at),
            }
            let sizes = [
                u8::try_from(next(256)).unwrap(),
                u8::try_from(next(256)).unwrap(),
            ];
            crate::fuzzing::verify(&[&sizes[..], &m].concat());
            runs += 1;
        }
    }
    assert!(runs > 400, "{runs}");
}
