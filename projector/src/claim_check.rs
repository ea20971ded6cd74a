//! Reading a record's resource back whole: inline in its event, or, for a claim check
//! (`RecordReceived::resource_blob`), from the blob store ingest kept it in before publishing.

use std::borrow::Cow;

use platform::blobs::{BlobError, BlobStore};
use schemas::{BlobReference, RecordReceived};

#[derive(Debug, thiserror::Error)]
pub enum Unresolved {
    /// The store could not be asked (down, unreachable): worth retrying.
    #[error(transparent)]
    Store(#[from] BlobError),
    /// The store answered, without the bytes the claim check names: the event cannot be applied
    /// until they are restored (it is set aside, `quarantine`). Names the address, never content.
    #[error("claim check {0}")]
    Missing(String),
}

/// The resource JSON of `r`, read from the blob store when `r` carries a claim check.
pub async fn resource_json<'r>(
    r: &'r RecordReceived,
    blobs: &dyn BlobStore,
) -> Result<Cow<'r, str>, Unresolved> {
    let Some(reference) = &r.resource_blob else {
        return Ok(Cow::Borrowed(&r.resource_json));
    };
    let bytes = blobs.get(&reference.sha256).await?;
    Ok(Cow::Owned(verified(reference, bytes)?))
}

/// The blob's bytes as the resource JSON, when they are the ones the claim check names: present,
/// of its size and SHA-256, and text.
fn verified(reference: &BlobReference, bytes: Option<Vec<u8>>) -> Result<String, Unresolved> {
    let missing = |why: &str| Unresolved::Missing(format!("{}: {why}", reference.sha256));
    let bytes = bytes.ok_or_else(|| missing("the blob store holds no such blob"))?;
    if bytes.len() as i64 != reference.size {
        return Err(missing("the blob's size differs from the claim check's"));
    }
    if platform::blobs::address(&bytes) != reference.sha256 {
        return Err(missing("the blob's SHA-256 differs from its address"));
    }
    String::from_utf8(bytes).map_err(|_| missing("the blob is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(bytes: &[u8]) -> BlobReference {
        BlobReference {
            sha256: platform::blobs::address(bytes),
            size: bytes.len() as i64,
        }
    }

    #[test]
    fn a_blob_is_taken_only_when_it_is_the_one_named() {
        let json = br#"{"resourceType":"DocumentReference"}"#;
        let r = reference(json);
        assert_eq!(verified(&r, Some(json.to_vec())).unwrap().as_bytes(), json);
        for wrong in [
            None,
            Some(json[1..].to_vec()),
            Some({
                let mut other = json.to_vec();
                other[2] = b'R';
                other
            }),
        ] {
            match verified(&r, wrong) {
                Err(Unresolved::Missing(why)) => assert!(why.starts_with(&r.sha256), "{why}"),
                other => panic!("{other:?}"),
            }
        }
        let latin1 = [0xE9u8, b'a'];
        assert!(matches!(
            verified(&reference(&latin1), Some(latin1.to_vec())),
            Err(Unresolved::Missing(_))
        ));
    }
}
