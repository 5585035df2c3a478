//! Which image records an `ImageStore` destination creates for a stored descriptor
//! (containerd `core/transfer/image/imagestore.go` `Store.Store`), and which it reads as a
//! source (`Store.Lookup`), with the archive ref-prefix rules of
//! `core/images/archive/reference.go` (`AddRefPrefix`, `FilterRefPrefix`).

use super::oci::{Descriptor, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use super::{Error, ImageStore};
use crate::metadata::images::Image;
use crate::metadata::Labels;

/// Marks an index entry whose names come from its annotations (set by import).
pub const REF_SOURCE: &str = "io.containerd.import.ref-source";

/// `isImagePrefix`: `s` is `prefix` or `prefix` followed by `/`, `:` or `@`.
fn is_image_prefix(s: &str, prefix: &str) -> bool {
    match s.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || rest.starts_with(['/', ':', '@']),
    }
}

/// `refTranslator`: full references pass (or, when `check_prefix`, only those under
/// `image`); tag-only ones get `image:` in front.
pub fn translate(image: &str, check_prefix: bool, r: &str) -> String {
    if image.is_empty() {
        return String::new();
    }
    if r.contains(['/', ':', '@']) {
        if check_prefix && !is_image_prefix(r, image) {
            return String::new();
        }
        return r.to_string();
    }
    format!("{image}:{r}")
}

/// `imageName`: the containerd name annotation if the translation keeps it whole, else
/// the OCI ref name translated.
fn image_name(desc: &Descriptor, cleanup: impl Fn(&str) -> String) -> String {
    if let Some(name) = desc
        .annotation(ANNOTATION_IMAGE_NAME)
        .filter(|n| !n.is_empty())
    {
        return if cleanup(name) == name {
            name.to_string()
        } else {
            String::new()
        };
    }
    match desc
        .annotation(ANNOTATION_REF_NAME)
        .filter(|n| !n.is_empty())
    {
        Some(r) => cleanup(r),
        None => String::new(),
    }
}

/// The images `store` names for `desc`; NotFound ("no image name found") when none.
pub fn images_for(store: &ImageStore, desc: &Descriptor) -> Result<Vec<Image>, Error> {
    let mut target = desc.clone();
    let extra_labels = || -> Labels {
        if store.name.is_empty() {
            return store.labels.clone();
        }
        let mut l = store.labels.clone();
        // Removed with the primary image, and collectable at once.
        l.insert("containerd.io/gc.bref.image".into(), store.name.clone());
        l.insert(
            "containerd.io/gc.expire".into(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        l
    };
    let mut names: Vec<(String, Labels)> = Vec::new();
    match desc.annotation(REF_SOURCE) {
        Some("annotation") => {
            for r in store.extra_references.iter().filter(|r| r.is_prefix) {
                let name = image_name(desc, |s| translate(&r.name, !r.allow_overwrite, s));
                if name.is_empty() {
                    if r.add_digest {
                        names.push((format!("{}@{}", r.name, desc.digest), extra_labels()));
                    }
                    continue;
                }
                names.push((name, extra_labels()));
                if r.add_digest && !r.skip_named_digest {
                    names.push((format!("{}@{}", r.name, desc.digest), extra_labels()));
                }
            }
            if let Some(a) = target.annotations.as_mut() {
                a.remove(REF_SOURCE);
            }
        }
        Some(other) => {
            return Err(Error::Invalid(format!(
                "ref source {other:?} not supported"
            )));
        }
        None => {
            if !store.name.is_empty() {
                names.push((store.name.clone(), store.labels.clone()));
            }
            for r in &store.extra_references {
                if r.is_prefix && !r.add_digest {
                    continue;
                }
                let name = if r.add_digest {
                    format!("{}@{}", r.name, desc.digest)
                } else {
                    r.name.clone()
                };
                names.push((name, extra_labels()));
            }
        }
    }
    if names.is_empty() {
        return Err(Error::NotFound(format!(
            "no image name found for {}",
            desc.digest
        )));
    }
    let target = target.to_meta();
    Ok(names
        .into_iter()
        .map(|(name, labels)| Image {
            name,
            labels,
            target: target.clone(),
            ..Image::default()
        })
        .collect())
}

/// `Store.Lookup`: the names an `ImageStore` source reads (export).
pub fn lookup_names(store: &ImageStore) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    if !store.name.is_empty() {
        out.push(store.name.clone());
    }
    for r in &store.extra_references {
        if r.is_prefix {
            return Err(Error::NotImplemented(
                "prefix lookup on export not implemented".into(),
            ));
        }
        out.push(r.name.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::ImageRef;
    use std::collections::BTreeMap;

    fn manifest(ann: &[(&str, &str)]) -> Descriptor {
        Descriptor {
            media_type: super::super::oci::MT_DOCKER_MANIFEST.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 10,
            annotations: Some(
                ann.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .chain([(REF_SOURCE.to_string(), "annotation".to_string())])
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Descriptor::default()
        }
    }

    fn ctr_import_store(prefix: &str, overwrite: bool, digests: bool) -> ImageStore {
        ImageStore {
            extra_references: vec![ImageRef {
                name: prefix.into(),
                is_prefix: true,
                allow_overwrite: overwrite,
                add_digest: digests,
                skip_named_digest: digests,
            }],
            ..ImageStore::default()
        }
    }

    #[test]
    fn ref_prefix_translation_matches_containerd() {
        assert_eq!(translate("foo/bar", false, "latest"), "foo/bar:latest");
        assert_eq!(translate("foo/bar", true, "other/x:1"), "");
        assert_eq!(translate("foo/bar", true, "foo/bar:1"), "foo/bar:1");
        assert_eq!(translate("foo/bar", true, "foo/barx:1"), "");
        assert_eq!(translate("", false, "x"), "");
    }

    #[test]
    fn import_names_from_annotations() {
        let d = manifest(&[
            (ANNOTATION_IMAGE_NAME, "docker.io/library/app:1"),
            (ANNOTATION_REF_NAME, "1"),
        ]);
        // ctr import without --base-name: import-<date> prefix, overwrite allowed.
        let imgs = images_for(&ctr_import_store("import-2026-01-01", true, false), &d).unwrap();
        assert_eq!(imgs.len(), 1);
        assert_eq!(imgs[0].name, "docker.io/library/app:1");
        assert!(!imgs[0].target.annotations.contains_key(REF_SOURCE));
        // --base-name other: the full name is not under the prefix.
        let err = images_for(&ctr_import_store("other", false, false), &d).unwrap_err();
        assert!(matches!(err, Error::NotFound(_)));
        // A tag-only ref name gets the prefix; --digests adds prefix@digest.
        let t = manifest(&[(ANNOTATION_REF_NAME, "v2")]);
        let imgs = images_for(&ctr_import_store("base", false, true), &t).unwrap();
        let names: Vec<_> = imgs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["base:v2"]);
        let bare = manifest(&[]);
        let imgs = images_for(&ctr_import_store("base", false, true), &bare).unwrap();
        assert_eq!(imgs[0].name, format!("base@{}", bare.digest));
    }

    #[test]
    fn plain_store_names_and_lookup() {
        let s = ImageStore {
            name: "x:1".into(),
            extra_references: vec![ImageRef {
                name: "y:2".into(),
                ..ImageRef::default()
            }],
            ..ImageStore::default()
        };
        let d = Descriptor {
            digest: format!("sha256:{}", "b".repeat(64)),
            ..Descriptor::default()
        };
        let imgs = images_for(&s, &d).unwrap();
        assert_eq!(imgs[0].name, "x:1");
        assert_eq!(imgs[1].name, "y:2");
        assert_eq!(imgs[1].labels["containerd.io/gc.bref.image"], "x:1");
        assert_eq!(lookup_names(&s).unwrap(), ["x:1", "y:2"]);
        assert!(lookup_names(&ctr_import_store("p", true, false)).is_err());
    }
}
