//! Replays every fuzz input kept in the repository through the entry points the cargo-fuzz
//! targets call (`antigravity_core::fuzzing`), on stable, so CI keeps what the campaigns
//! found: the seeds (`fuzz/seeds/<target>/`), the minimized corpus (`fuzz/corpus/<target>/`)
//! and the reproducer of every crash that was fixed (`fuzz/regressions/<target>/`).
//! An input that panics fails the test, which names the file.

use std::path::{Path, PathBuf};

use antigravity_core::cpu::CpuBackend;
use antigravity_core::fuzzing;
use antigravity_core::gguf::GgufFile;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted (none when the folder is absent).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn replay(kind: &str) -> usize {
    let mut n = 0;
    for target in fuzzing::TARGETS {
        for p in inputs(kind, target) {
            let data = std::fs::read(&p).unwrap();
            // Printed first, so a panic's output says which file it was.
            eprintln!("{target}: {}", p.display());
            assert!(fuzzing::run(target, &data));
            n += 1;
        }
    }
    n
}

#[test]
fn seeds_replay() {
    let n = replay("seeds");
    // Every target has seeds (fuzz/make_seeds.py writes them).
    for t in fuzzing::TARGETS {
        assert!(!inputs("seeds", t).is_empty(), "no seeds for {t}");
    }
    eprintln!("{n} seed inputs replayed");
}

#[test]
fn corpus_replays() {
    let n = replay("corpus");
    for t in fuzzing::TARGETS {
        assert!(!inputs("corpus", t).is_empty(), "no minimized corpus for {t}");
    }
    eprintln!("{n} corpus inputs replayed");
}

#[test]
fn crash_reproducers_replay() {
    let n = replay("regressions");
    if n == 0 {
        eprintln!("note: fuzz/regressions/ holds no reproducer");
    }
    eprintln!("{n} crash reproducers replayed");
}

/// The seeds start inside the parsers: the micro GGUF models load into a model and the
/// unknown target name is refused.
#[test]
fn seeds_reach_the_model() {
    let mut loaded = 0;
    for p in inputs("seeds", "gguf") {
        if !p.file_name().unwrap().to_string_lossy().starts_with("micro") {
            continue;
        }
        let f = GgufFile::from_bytes(std::fs::read(&p).unwrap(), "seed").unwrap();
        let (cfg, _) = antigravity_core::model::gguf::load(&f, &CpuBackend::default())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!((cfg.dim, cfg.n_layer, cfg.vocab), (32, 1, 16));
        loaded += 1;
    }
    assert!(loaded >= 5, "{loaded} micro models");
    assert!(!fuzzing::run("nonesuch", b""));
}
