//! What to restore and what to prune: pure functions over what `store` listed and read, so the
//! rules are tested without I/O.
//!
//! Invariants they keep:
//! - Only a *valid* published checkpoint is restored, and the newest one: a corrupt one newer than
//!   it is skipped (and reported), never half-restored.
//! - A checkpoint of another format version is never skipped silently: if it is newer than every
//!   valid one, restoring anything older would go back in time, so the start is refused.
//! - Checkpoints exist but none is usable: refused too, rather than silently starting over.
//! - Pruning keeps at least one published checkpoint, and never deletes the checkpoint being
//!   written nor anything newer than the newest published one (it may be being written).

use super::format::FORMAT_VERSION;

/// What listing and reading found for one checkpoint, newest last or any order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Candidate {
    /// Its manifest and every part read back intact.
    Valid(u64),
    /// Its manifest or a part is missing, short, or fails its checksum.
    Corrupt {
        /// The checkpoint.
        id: u64,
        /// What is wrong, naming the file and the location.
        reason: String,
    },
    /// Written in another format version.
    Incompatible {
        /// The checkpoint.
        id: u64,
        /// The format version it was written in.
        found: u32,
    },
}

impl Candidate {
    fn id(&self) -> u64 {
        match self {
            Candidate::Valid(id) | Candidate::Corrupt { id, .. } | Candidate::Incompatible { id, .. } => *id,
        }
    }
}

/// What to do when a pipeline starts on a checkpoint location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RestoreChoice {
    /// There is no checkpoint: start fresh.
    Nothing,
    /// Restore checkpoint `id`; `skipped` says which newer ones could not be used and why.
    Restore {
        /// The checkpoint to restore.
        id: u64,
        /// One line per newer checkpoint skipped: its id and what is wrong with it.
        skipped: Vec<String>,
    },
    /// Do not start: the message says why and how to start over.
    Refuse(String),
}

/// The newest valid checkpoint; corrupt ones newer than it are skipped (each reason in
/// `skipped`); an incompatible one newer than the newest valid one (or with no valid one)
/// refuses with a message naming id, found and supported versions and `--from-scratch`. With
/// only corrupt checkpoints it refuses as well, listing them: starting over silently would
/// replay the whole input into sinks that already committed its results.
pub(crate) fn choose_restore(candidates: &[Candidate]) -> RestoreChoice {
    let mut newest_first: Vec<&Candidate> = candidates.iter().collect();
    newest_first.sort_by_key(|c| std::cmp::Reverse(c.id()));
    let mut skipped = Vec::new();
    for candidate in newest_first {
        match candidate {
            Candidate::Valid(id) => return RestoreChoice::Restore { id: *id, skipped },
            Candidate::Corrupt { id, reason } => skipped.push(format!("checkpoint {id}: {reason}")),
            Candidate::Incompatible { id, found } => {
                return RestoreChoice::Refuse(format!(
                    "checkpoint {id} was written in checkpoint format version {found}, but this build \
                     reads version {FORMAT_VERSION}: run a Weir that reads version {found}, or start over \
                     with `--from-scratch` (`Checkpointing::from_scratch`), which ignores the existing \
                     checkpoints"
                ));
            }
        }
    }
    if skipped.is_empty() {
        RestoreChoice::Nothing
    } else {
        RestoreChoice::Refuse(format!(
            "no checkpoint can be restored ({}); start over with `--from-scratch` \
             (`Checkpointing::from_scratch`), which ignores the existing checkpoints",
            skipped.join("; ")
        ))
    }
}

/// Which checkpoints to delete, ascending: of the published ids keep the newest `keep` (at least
/// 1); delete unpublished ids older than the newest published one (leftovers of failed
/// checkpoints) but never `in_flight` or anything newer than the newest published one (they may
/// be being written).
pub(crate) fn prune(published: &[u64], unpublished: &[u64], keep: usize, in_flight: Option<u64>) -> Vec<u64> {
    let mut published = published.to_vec();
    published.sort_unstable_by(|a, b| b.cmp(a));
    published.dedup();
    let Some(&newest) = published.first() else {
        return Vec::new();
    };
    let mut doomed: Vec<u64> = published
        .iter()
        .skip(keep.max(1))
        .chain(unpublished.iter().filter(|&&id| id < newest))
        .copied()
        .filter(|&id| Some(id) != in_flight)
        .collect();
    doomed.sort_unstable();
    doomed.dedup();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corrupt(id: u64, reason: &str) -> Candidate {
        Candidate::Corrupt { id, reason: reason.into() }
    }

    #[test]
    fn nothing_to_restore_without_checkpoints() {
        assert_eq!(choose_restore(&[]), RestoreChoice::Nothing);
    }

    #[test]
    fn the_newest_valid_checkpoint_is_restored_whatever_the_order() {
        let candidates = [Candidate::Valid(3), Candidate::Valid(9), Candidate::Valid(5)];
        assert_eq!(choose_restore(&candidates), RestoreChoice::Restore { id: 9, skipped: vec![] });
    }

    #[test]
    fn corrupt_newer_checkpoints_are_skipped_with_their_reasons() {
        let candidates = [Candidate::Valid(4), corrupt(6, "part a.part is missing"), corrupt(5, "bad CRC")];
        let RestoreChoice::Restore { id, skipped } = choose_restore(&candidates) else {
            panic!("expected a restore");
        };
        assert_eq!(id, 4);
        assert_eq!(skipped, ["checkpoint 6: part a.part is missing", "checkpoint 5: bad CRC"]);
    }

    #[test]
    fn corrupt_older_checkpoints_are_not_reported() {
        let candidates = [corrupt(1, "bad CRC"), Candidate::Valid(2)];
        assert_eq!(choose_restore(&candidates), RestoreChoice::Restore { id: 2, skipped: vec![] });
    }

    #[test]
    fn an_incompatible_newest_checkpoint_refuses() {
        for candidates in [
            vec![Candidate::Valid(7), Candidate::Incompatible { id: 8, found: 1 }],
            vec![Candidate::Incompatible { id: 8, found: 1 }],
            vec![Candidate::Valid(7), corrupt(9, "truncated"), Candidate::Incompatible { id: 8, found: 1 }],
        ] {
            let RestoreChoice::Refuse(message) = choose_restore(&candidates) else {
                panic!("expected a refusal for {candidates:?}");
            };
            for needle in
                ["checkpoint 8", "version 1", &format!("version {FORMAT_VERSION}"), "--from-scratch"]
            {
                assert!(message.contains(needle), "{needle:?} not in {message:?}");
            }
        }
    }

    #[test]
    fn an_incompatible_checkpoint_older_than_a_valid_one_is_fine() {
        let candidates = [Candidate::Incompatible { id: 2, found: 1 }, Candidate::Valid(3)];
        assert_eq!(choose_restore(&candidates), RestoreChoice::Restore { id: 3, skipped: vec![] });
    }

    #[test]
    fn only_corrupt_checkpoints_refuse_and_list_them() {
        let RestoreChoice::Refuse(message) = choose_restore(&[corrupt(1, "bad CRC"), corrupt(2, "missing")])
        else {
            panic!("expected a refusal");
        };
        for needle in ["checkpoint 2: missing", "checkpoint 1: bad CRC", "--from-scratch"] {
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
    }

    #[test]
    fn prune_keeps_the_newest_n_published() {
        assert_eq!(prune(&[1, 2, 3, 4, 5], &[], 3, None), [1, 2]);
        assert_eq!(prune(&[5, 1, 4, 2, 3], &[], 3, None), [1, 2]);
        assert_eq!(prune(&[4, 5], &[], 3, None), Vec::<u64>::new());
    }

    #[test]
    fn prune_keeps_at_least_one() {
        assert_eq!(prune(&[1, 2, 3], &[], 0, None), [1, 2]);
        assert_eq!(prune(&[3], &[], 0, None), Vec::<u64>::new());
    }

    #[test]
    fn prune_deletes_unpublished_leftovers_older_than_the_newest_published() {
        assert_eq!(prune(&[2, 5], &[1, 3, 4, 6, 7], 2, None), [1, 3, 4]);
        // With nothing published, any unpublished one may be being written.
        assert_eq!(prune(&[], &[1, 2], 1, None), Vec::<u64>::new());
    }

    #[test]
    fn prune_never_deletes_the_checkpoint_in_flight() {
        assert_eq!(prune(&[2, 5], &[3, 4], 1, Some(4)), [2, 3]);
        assert_eq!(prune(&[1, 2, 3], &[], 1, Some(1)), [2]);
    }
}
