//! Mutation fuzzing of everything that reads untrusted bytes: the IDX/gzip reader, the model
//! loader, the checkpoint reader through resuming a run from it, and the pictures `predict`
//! and `serve` read. A bounded count runs in `cargo test`; set FUZZ_ITERS for
//! a longer run (`FUZZ_ITERS=100000 cargo test --release --test fuzz -- --nocapture`).
//! Any panic fails the test; a clean `Err` is the expected answer to garbage.

mod common;

use std::path::Path;

use mnist_cnn::checkpoint::{Checkpoint, TrainerState};
use mnist_cnn::commands::serve::status_of;
use mnist_cnn::data::Split;
use mnist_cnn::data::idx::{self, Kind};
use mnist_cnn::engine::Backend;
use mnist_cnn::model::{self, Provenance};
use mnist_cnn::network::Params;
use mnist_cnn::settings::{Given, Settings};
use mnist_cnn::{fit, formats};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn iterations(default: usize) -> usize {
    std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One random edit: flip bits, overwrite a 32-bit field, cut, extend or splice.
fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = out.len().max(1);
        match rng.random_range(0..6) {
            0 if !out.is_empty() => {
                let i = rng.random_range(0..out.len());
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 if out.len() >= 4 => {
                // Header-sized integers: counts, lengths, dimensions.
                let i = rng
                    .random_range(0..out.len() - 3)
                    .min(rng.random_range(0..64));
                let i = i.min(out.len() - 4);
                let v: u32 = match rng.random_range(0..3) {
                    0 => u32::MAX,
                    1 => rng.random(),
                    _ => rng.random_range(0..70_000),
                };
                out[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            2 => out.truncate(rng.random_range(0..len)),
            3 => {
                let extra: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
                out.extend(extra);
            }
            4 if !out.is_empty() => {
                let i = rng.random_range(0..out.len());
                let n = rng.random_range(1..=16).min(out.len() - i);
                for b in &mut out[i..i + n] {
                    *b = rng.random();
                }
            }
            _ => {
                let i = rng.random_range(0..len);
                out.insert(i.min(out.len()), rng.random());
            }
        }
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn idx_reader_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x1d3);
    let images = idx::encode(Kind::Images, &vec![7u8; 4 * idx::PIXELS]);
    let labels = idx::encode(Kind::Labels, &[1, 2, 3, 4]);
    let seeds = [
        (Kind::Images, images.clone()),
        (Kind::Images, gzip(&images)),
        (Kind::Labels, labels.clone()),
        (Kind::Labels, gzip(&labels)),
        (
            Kind::Labels,
            std::fs::read(common::subset_dir().join("t10k-labels-idx1-ubyte.gz")).unwrap(),
        ),
    ];
    let n = iterations(3000);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..n {
        let (kind, seed) = &seeds[rng.random_range(0..seeds.len())];
        let input = mutate(&mut rng, seed);
        // Mutated plain input is also tried gzipped, so the IDX checks run behind gzip too.
        for candidate in [input.clone(), gzip(&input)] {
            match idx::decode(*kind, &candidate[..]) {
                Ok(d) => {
                    ok += 1;
                    assert_eq!(
                        d.data.len(),
                        d.count
                            * if *kind == Kind::Images {
                                idx::PIXELS
                            } else {
                                1
                            }
                    );
                }
                Err(_) => err += 1,
            }
        }
    }
    println!(
        "idx: {n} mutations, {} decodes: {ok} accepted, {err} rejected, 0 panics",
        ok + err
    );
    assert!(
        err > 0 && ok > 0,
        "the mutations should produce both outcomes"
    );
}

/// A refusal as the terminal shows it: one line, no control character.
fn assert_one_clean_line(err: &mnist_cnn::Error) {
    let text = err.to_string();
    assert!(
        !text.chars().any(char::is_control),
        "not one clean line: {text:?}"
    );
}

/// Mutations of `seed`: mostly of its first `head` bytes (header and metadata), every fifth
/// anywhere.
fn mutated(rng: &mut StdRng, seed: &[u8], head: usize, i: usize) -> Vec<u8> {
    if i.is_multiple_of(5) {
        return mutate(rng, seed);
    }
    let mut input = seed.to_vec();
    input.splice(..head, mutate(rng, &seed[..head]));
    input
}

#[test]
fn model_reader_never_panics() {
    let params = Params::glorot(1);
    let provenance = Provenance {
        epochs: 12,
        seed: 1,
        batch: 128,
        test_images: 10_000,
        test_loss: 0.03,
        test_accuracy: 0.99,
    };
    let ours = model::file_bytes(&params, Some(&provenance)).unwrap();
    let pytorch = formats::safetensors::to_bytes(&params).unwrap();
    let mut rng = StdRng::seed_from_u64(0xb1);
    let n = iterations(2000);
    let path = Path::new("fuzzed.bin");
    let (mut ok, mut err) = (0, 0);
    for i in 0..n {
        // The first 1,024 bytes hold the header and metadata of either format.
        let model = if i % 2 == 0 { &ours } else { &pytorch };
        match formats::from_bytes(mutated(&mut rng, model, 1024, i / 2), path) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_one_clean_line(&e);
                err += 1;
            }
        }
    }
    println!(
        "model (burnpack and safetensors): {n} mutations: {ok} loaded, {err} refused in one line, 0 panics"
    );
    assert!(ok > 0 && err > 0, "both outcomes should occur");
}

#[test]
fn checkpoint_reader_never_panics() {
    let ckpt = Checkpoint {
        settings: Settings::DEFAULT,
        epochs_done: 1,
        train_len: 60_000,
        test_len: 10_000,
        state: TrainerState::fresh(2),
        history: mnist_cnn::history::from_csv(
            "epoch,loss,acc,val_loss,val_acc,seconds\n1,0.5,0.8,0.4,0.9,12.5\n",
        )
        .unwrap(),
    }
    .to_bytes()
    .unwrap();
    let mut rng = StdRng::seed_from_u64(0xc5);
    let n = iterations(1000);
    let path = Path::new("fuzzed.ckpt");
    let (mut ok, mut err) = (0, 0);
    for i in 0..n {
        match Checkpoint::from_bytes(mutated(&mut rng, &ckpt, 2048, i), path) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_one_clean_line(&e);
                err += 1;
            }
        }
    }
    println!("checkpoint reader: {n} mutations: {ok} read, {err} refused in one line, 0 panics");
    assert!(ok > 0 && err > 0, "both outcomes should occur");
}

/// Mutated checkpoints go all the way through `train --resume`'s path: read, checked against
/// the data, handed to an engine, and trained on for a step.
#[test]
fn resuming_from_a_mutated_checkpoint_never_panics() {
    let split = |n: usize| Split {
        images: (0..n * idx::PIXELS).map(|i| (i % 251) as u8).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
    };
    let (train, test) = (split(6), split(4));
    let ckpt = Checkpoint {
        settings: Settings {
            epochs: 2,
            batch: 3,
            lr: 1.0,
            seed: 1,
        },
        epochs_done: 1,
        train_len: 6,
        test_len: 4,
        state: TrainerState::fresh(1),
        history: mnist_cnn::history::from_csv(
            "epoch,loss,acc,val_loss,val_acc,seconds\n1,0.5,0.8,0.4,0.9,12.5\n",
        )
        .unwrap(),
    }
    .to_bytes()
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzzed.ckpt");
    let mut rng = StdRng::seed_from_u64(0xc4);
    let n = iterations(150);
    let (mut resumed_count, mut refused) = (0, 0);
    for i in 0..n {
        // Mostly the header and metadata (the first KiB), sometimes anywhere.
        let input = if i % 4 == 0 {
            mutate(&mut rng, &ckpt)
        } else {
            let mut input = ckpt.clone();
            let head = mutate(&mut rng, &ckpt[..1024]);
            input.splice(..1024, head);
            input
        };
        std::fs::write(&path, &input).unwrap();
        let backend = if i % 10 == 0 {
            Backend::Flex
        } else {
            Backend::Cpu
        };
        let resumed = Checkpoint::load(&path).and_then(|ckpt| {
            Given::default().resolve(Some(ckpt.resumed(&path)))?;
            fit::restore(&path, ckpt, (&train, &test), backend)
        });
        match resumed {
            Ok(mut run) => {
                resumed_count += 1;
                let pixels: Vec<f32> = train.images[..3 * idx::PIXELS]
                    .iter()
                    .map(|&p| f32::from(p) / 255.0)
                    .collect();
                run.trainer.step(&pixels, &train.labels[..3], 7, 1.0);
            }
            Err(_) => refused += 1,
        }
    }
    println!(
        "checkpoint: {n} mutations: {resumed_count} resumed and stepped, {refused} refused, 0 panics"
    );
    assert!(
        resumed_count > 0 && refused > 0,
        "both outcomes should occur"
    );
}

/// PNG, JPEG and PGM pictures with their headers and bodies mutated: reading one never panics,
/// and every answer is a digit's 28x28 or a reason that `serve` answers with a 4xx.
#[test]
fn pictures_never_panic_and_every_answer_is_a_digit_or_a_4xx() {
    let (pgm, _) = common::digit_pgm(0);
    let grey = mnist_cnn::digits::decode(&pgm).unwrap();
    let big = image::imageops::resize(&grey, 120, 90, image::imageops::FilterType::Triangle);
    let encode = |format| {
        let mut out = std::io::Cursor::new(Vec::new());
        big.write_to(&mut out, format).unwrap();
        out.into_inner()
    };
    let bases = [
        pgm.clone(),
        encode(image::ImageFormat::Png),
        encode(image::ImageFormat::Jpeg),
        common::png_declaring(300, 200),
    ];
    let mut rng = StdRng::seed_from_u64(0x91c);
    let n = iterations(400);
    let (mut digits, mut refused) = (0, 0);
    for i in 0..n {
        let base = &bases[i % bases.len()];
        // Mostly the header (the first 64 bytes), sometimes anywhere.
        let input = if i % 3 == 0 {
            mutate(&mut rng, base)
        } else {
            let head = base.len().min(64);
            let mut input = base.clone();
            input.splice(..head, mutate(&mut rng, &base[..head]));
            input
        };
        match mnist_cnn::digits::read(&input) {
            Ok(pixels) => {
                assert_eq!(pixels.len(), idx::PIXELS);
                digits += 1;
            }
            Err(reason) => {
                let status = status_of(&reason);
                assert!(status.is_client_error(), "{reason}: {status}");
                refused += 1;
            }
        }
    }
    println!("pictures: {n} mutations: {digits} read, {refused} refused with a 4xx, 0 panics");
    assert!(digits > 0 && refused > 0, "both outcomes should occur");
}
