//! Compiles `proto/` into Rust with the protoc binary vendored by
//! `protoc-bin-vendored`, so a fresh machine needs no system protoc.
//! Also writes the file descriptor set that server reflection serves.
//!
//! The schema is compiled twice: `pb` (clients and plain types) and, for
//! the server, `wire`, where `journey.v1.Event` is `crate::wire::WireEvent`:
//! an event kept in its encoded form, so stored events go into responses
//! without being decoded and encoded again, the append requests are
//! hand-written to take their events' bytes whole, the contact batch
//! request to stop decoding customers past a cap, the context response is
//! hand-written to take its fixed fields encoded once, and the codec is
//! `crate::wire::WireCodec`.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = [PathBuf::from("proto/journey/v1/journey.proto")];
    let includes = [PathBuf::from("proto"), well_known];
    // Maps as BTreeMap: the domain keeps attributes sorted, so a decoded
    // event's map moves into it instead of being hashed and then sorted.
    tonic_prost_build::configure()
        .btree_map(".")
        .file_descriptor_set_path(out_dir.join("journey_descriptor.bin"))
        .compile_protos(&protos, &includes)?;

    let wire_dir = out_dir.join("wire");
    std::fs::create_dir_all(&wire_dir)?;
    tonic_prost_build::configure()
        .btree_map(".")
        .build_client(false)
        .out_dir(&wire_dir)
        .extern_path(".journey.v1.Event", "crate::wire::WireEvent")
        .extern_path(
            ".journey.v1.AppendEventRequest",
            "crate::wire::AppendEventRequest",
        )
        .extern_path(
            ".journey.v1.AppendEventsRequest",
            "crate::wire::AppendEventsRequest",
        )
        .extern_path(
            ".journey.v1.CheckContactBatchRequest",
            "crate::wire::CheckContactBatchRequest",
        )
        .extern_path(
            ".journey.v1.GetJourneyContextResponse",
            "crate::wire::GetJourneyContextResponse",
        )
        .codec_path("crate::wire::WireCodec")
        .compile_protos(&protos, &includes)?;
    // prost-build prints rerun-if-changed for the files it compiled; the
    // folder is added so a new proto file also triggers a rebuild.
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
