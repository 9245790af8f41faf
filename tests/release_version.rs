//! One version everywhere a release names it: the crate (`Cargo.toml`), the newest entry of
//! `CHANGELOG.md`, the image tag every kustomization in `deploy/` pulls for the agent
//! (`images: - name: triton-sidecar ... newTag:`) and the Dockerfile's default `ARG VERSION`.
//! A bump that misses one of them fails here.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The version of the first `## [X.Y.Z]` heading.
fn changelog_head(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("## ["))
        .and_then(|rest| rest.split(']').next())
        .map(str::to_owned)
}

/// Every `newTag:` of an `images:` entry named `triton-sidecar`, with the file it is in.
fn agent_tags(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            agent_tags(&p, out);
        } else if p.file_name().is_some_and(|n| n == "kustomization.yaml") {
            let text = read(&p);
            let mut in_agent = false;
            for line in text.lines() {
                let t = line.trim();
                if let Some(name) = t.strip_prefix("- name:") {
                    in_agent = name.trim() == "triton-sidecar";
                } else if let Some(tag) = t.strip_prefix("newTag:") {
                    if in_agent {
                        out.push((p.clone(), tag.trim().trim_matches('"').to_owned()));
                    }
                }
            }
        }
    }
}

#[test]
fn crate_changelog_manifests_and_dockerfile_name_one_version() {
    let crate_v = env!("CARGO_PKG_VERSION");
    let head = changelog_head(&read(&root().join("CHANGELOG.md")));
    assert_eq!(
        head.as_deref(),
        Some(crate_v),
        "CHANGELOG.md's newest entry is not the crate's version"
    );
    let mut tags = Vec::new();
    agent_tags(&root().join("deploy"), &mut tags);
    assert!(
        tags.len() >= 5,
        "expected the agent's newTag in the overlays and examples, found {tags:?}"
    );
    for (file, tag) in &tags {
        assert_eq!(
            tag,
            crate_v,
            "{} pulls the agent at {tag}, the crate is {crate_v}",
            file.display()
        );
    }
    let dockerfile = read(&root().join("docker/Dockerfile"));
    let arg = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG VERSION="));
    assert_eq!(arg, Some(crate_v), "docker/Dockerfile's default VERSION");
}

#[test]
fn the_checks_can_fail() {
    assert_eq!(
        changelog_head("# Changelog\n\n## [0.2.0] - x\n## [0.1.0]"),
        Some("0.2.0".into())
    );
    assert_eq!(changelog_head("# Changelog\nno entry"), None);
    let dir = std::env::temp_dir().join(format!("release-version-{}", std::process::id()));
    let sub = dir.join("overlay");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(
        sub.join("kustomization.yaml"),
        "images:\n  - name: nvcr.io/nvidia/tritonserver\n    newTag: 26.08-py3\n  - name: triton-sidecar\n    newName: r/x\n    newTag: 9.9.9\n",
    )
    .unwrap();
    let mut tags = Vec::new();
    agent_tags(&dir, &mut tags);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        tags.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
        ["9.9.9"]
    );
}
