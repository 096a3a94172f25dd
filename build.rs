//! Compiles `proto/` into Rust with the protoc binary vendored by
//! `protoc-bin-vendored`, so a fresh machine needs no system protoc.
//! Also writes the file descriptor set that server reflection serves.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("journey_descriptor.bin"))
        .compile_protos(
            &[PathBuf::from("proto/journey/v1/journey.proto")],
            &[PathBuf::from("proto"), well_known],
        )?;
    // prost-build prints rerun-if-changed for the files it compiled; the
    // folder is added so a new proto file also triggers a rebuild.
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
