//! The image format: round trips, atomic files, and every kind of bad input.

use crate::common::TempDir;
use crterm::image::{self, ImageError, ImageInfo, ImageWriter, SectionKind};
use crterm::term_model::{Term, model_of};
use proptest::prelude::*;
use std::os::unix::fs::PermissionsExt;

fn sample_term() -> Term {
    model_of(
        40,
        10,
        "\x1b[1;31mgolden\x1b[0m image\r\n日本 e\u{301}\x1b[?1049h\x1b[5;5Halt".as_bytes(),
    )
}

/// Half random (incompressible), half a repeated pattern.
fn sample_pages(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    while v.len() < len / 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    while v.len() < len {
        v.extend_from_slice(b"pattern ");
    }
    v.truncate(len);
    v
}

fn write_sample(pages: &[u8]) -> Vec<u8> {
    let mut w = ImageWriter::new(Vec::new(), &ImageInfo::here()).unwrap();
    w.meta(SectionKind::TERM_MODEL, &sample_term()).unwrap();
    w.chunks(SectionKind::PAGES, pages).unwrap();
    w.finish().unwrap()
}

fn pages_of(img: &image::Image) -> Vec<u8> {
    let mut out = Vec::new();
    img.chunks(SectionKind::PAGES, |c| {
        out.extend_from_slice(c);
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn round_trip_metadata_and_pages() {
    let pages = sample_pages(9 << 20);
    let bytes = write_sample(&pages);
    // The random half does not compress, the pattern half nearly vanishes.
    assert!(bytes.len() < pages.len() * 6 / 10, "{} bytes", bytes.len());
    let img = image::read(&mut &bytes[..]).unwrap();
    assert_eq!(img.format, (image::FORMAT_MAJOR, image::FORMAT_MINOR));
    assert_eq!(img.info.kernel, ImageInfo::here().kernel);
    assert!(!img.info.cpu_features.is_empty());
    let term: Term = img.meta(SectionKind::TERM_MODEL).unwrap();
    assert_eq!(term, sample_term());
    assert_eq!(pages_of(&img), pages);
    assert!(matches!(
        img.meta::<Term>(SectionKind::SESSION),
        Err(ImageError::Missing(_))
    ));
}

#[test]
fn files_are_private_and_replaced_whole() {
    let dir = TempDir::new("crterm-img");
    let path = dir.path().join("s.img");
    image::write_file(&path, &ImageInfo::here(), |w| {
        w.meta(SectionKind::TERM_MODEL, &sample_term())
    })
    .unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "an image holds the session's memory");
    let before = std::fs::read(&path).unwrap();

    // A checkpoint that fails halfway leaves the previous image as it was, and no litter.
    let failed = image::write_file(&path, &ImageInfo::here(), |w| {
        w.chunks(SectionKind::PAGES, &sample_pages(1 << 20))?;
        Err(std::io::Error::other("the dump failed"))
    });
    assert!(failed.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("s.img")]);
    let img = image::read_file(&path).unwrap();
    assert_eq!(
        img.meta::<Term>(SectionKind::TERM_MODEL).unwrap(),
        sample_term()
    );
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = write_sample(&sample_pages(3000));
    for cut in 0..bytes.len() {
        let r = image::read(&mut &bytes[..cut]);
        assert!(
            r.is_err(),
            "an image cut at {cut} of {} was accepted",
            bytes.len()
        );
        let msg = r.unwrap_err().to_string();
        assert!(!msg.is_empty() && !msg.contains('\n'), "{msg}");
    }
}

#[test]
fn every_flipped_byte_is_caught() {
    let bytes = write_sample(&sample_pages(3000));
    for at in 0..bytes.len() {
        // The minor version may differ: a reader of 1.x reads any 1.y.
        if (10..12).contains(&at) {
            continue;
        }
        let mut bad = bytes.clone();
        bad[at] ^= 0x41;
        let img = image::read(&mut &bad[..]);
        let caught = match img {
            Err(_) => true,
            Ok(img) => {
                img.meta::<Term>(SectionKind::TERM_MODEL).is_err()
                    || img.chunks(SectionKind::PAGES, |_| Ok(())).is_err()
            }
        };
        assert!(caught, "a flipped byte at {at} went unnoticed");
    }
}

#[test]
fn other_versions_and_other_files_are_named() {
    let mut bytes = write_sample(b"x");
    bytes[8] = 2;
    let e = image::read(&mut &bytes[..]).unwrap_err().to_string();
    assert!(e.contains("format 2.0") && e.contains("reads 1.x"), "{e}");
    let e = image::read(&mut &b"#!/bin/sh\necho hi\n"[..]).unwrap_err();
    assert!(matches!(e, ImageError::NotAnImage), "{e}");
    let e = image::read(&mut &b""[..]).unwrap_err();
    assert!(matches!(e, ImageError::NotAnImage), "{e}");
}

#[test]
fn hostile_lengths_allocate_nothing_large() {
    let bytes = write_sample(b"");
    let info_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let first_section = 24 + info_len;
    // A section claiming half a gigabyte, with nothing behind it.
    let mut huge = bytes[..first_section + 32].to_vec();
    huge[first_section + 16..first_section + 24].copy_from_slice(&(1u64 << 29).to_le_bytes());
    let e = image::read(&mut &huge[..]).unwrap_err();
    assert!(matches!(e, ImageError::Truncated(_)), "{e}");
    // Beyond the limit it is refused before any read.
    huge[first_section + 16..first_section + 24].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = image::read(&mut &huge[..]).unwrap_err();
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
    // A header with an absurd information length.
    let mut bad = bytes.clone();
    bad[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        image::read(&mut &bad[..]).unwrap_err(),
        ImageError::TooLarge { .. }
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..600), keep in 0usize..200) {
        let good = write_sample(b"some pages");
        let mut bytes = good[..keep.min(good.len())].to_vec();
        bytes.extend_from_slice(&tail);
        if let Ok(img) = image::read(&mut &bytes[..]) {
            let _ = img.meta::<Term>(SectionKind::TERM_MODEL);
            let _ = img.chunks(SectionKind::PAGES, |_| Ok(()));
        }
    }
}

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/golden/term-model-v1.img"
);

/// Every build must still read the image format 1.0 it once wrote. (Regenerate only with a
/// format change: CRTERM_WRITE_GOLDEN=1 cargo test --test integration golden.)
#[test]
fn golden_image_still_reads() {
    if std::env::var_os("CRTERM_WRITE_GOLDEN").is_some() {
        let info = ImageInfo {
            creator: "crterm 0.1.0".into(),
            kernel: "6.18.44".into(),
            machine: "x86_64".into(),
            cpu_features: vec!["avx2".into(), "sse2".into()],
            created_unix: 1_795_000_000,
        };
        image::write_file(std::path::Path::new(GOLDEN), &info, |w| {
            w.meta(SectionKind::TERM_MODEL, &sample_term())?;
            w.chunks(SectionKind::PAGES, &sample_pages(64 << 10))
        })
        .unwrap();
    }
    let img = image::read_file(std::path::Path::new(GOLDEN)).unwrap();
    assert_eq!(img.format, (1, 0));
    assert_eq!(img.info.creator, "crterm 0.1.0");
    let term: Term = img.meta(SectionKind::TERM_MODEL).unwrap();
    term.validate().expect("a model the parser made is valid");
    assert!(term.alt_active);
    assert!(crterm::term_model::row_text(term.primary.row(0)).starts_with("golden image"));
    assert_eq!(pages_of(&img), sample_pages(64 << 10));
}

#[test]
fn sections_can_be_checked_without_being_kept() {
    let pages = sample_pages(9 << 20);
    let bytes = write_sample(&pages);
    let skip_pages = |k: SectionKind| k != SectionKind::PAGES;
    let img = image::read_with(&mut &bytes[..], skip_pages).unwrap();
    assert_eq!(
        img.meta::<Term>(SectionKind::TERM_MODEL).unwrap(),
        sample_term()
    );
    assert!(
        img.sections
            .iter()
            .filter(|s| s.kind == SectionKind::PAGES)
            .all(|s| s.stored.is_empty())
    );
    assert!(matches!(
        img.chunks(SectionKind::PAGES, |_| Ok(())),
        Err(ImageError::Missing(_))
    ));
    // A damaged page is still found, though the pages are not kept.
    let mut bad = bytes.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x55;
    let e = image::read_with(&mut &bad[..], skip_pages).unwrap_err();
    assert!(matches!(e, ImageError::Corrupt(_)), "{e}");
}
