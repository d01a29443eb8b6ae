use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::packet::UserID;
use sequoia_openpgp::packet::signature::SignatureBuilder;
use sequoia_openpgp::serialize::MarshalInto;
use sequoia_openpgp::types::SignatureType;
use sequoia_openpgp::{Fingerprint, Packet};

use std::collections::BTreeSet;
use std::thread;

use super::*;
use crate::openpgp::email_addresses;
use crate::store::certd::{self, init, insert, reindex, remove};
use crate::store::manifest::Manifest;
use crate::store::watch::RACY_MARGIN;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn builder(userids: &[&str]) -> CertBuilder<'static> {
    let mut builder = CertBuilder::new()
        .set_cipher_suite(CipherSuite::Cv25519)
        .add_storage_encryption_subkey();
    for uid in userids {
        builder = builder.add_userid(*uid);
    }
    builder
}

fn cert(userids: &[&str]) -> Cert {
    builder(userids).generate().expect("generate").0
}

fn created_ago(userids: &[&str], ago: Duration) -> Cert {
    builder(userids)
        .set_creation_time(SystemTime::now() - ago)
        .generate()
        .expect("generate")
        .0
}

fn expired(userids: &[&str]) -> Cert {
    builder(userids)
        .set_creation_time(SystemTime::now() - 730 * DAY)
        .set_validity_period(365 * DAY)
        .generate()
        .expect("generate")
        .0
}

fn revoked(userids: &[&str], ago: Duration) -> Cert {
    let (cert, revocation) = builder(userids)
        .set_creation_time(SystemTime::now() - ago)
        .generate()
        .expect("generate");
    cert.insert_packets(revocation).expect("revoke").0
}

/// Writes `cert` straight into the cert-d layout, as `sq` would.
/// The store gets a manifest if it has none (planted entries are not listed in it: a
/// store may grow behind `sealgate keys`' back, as `sq` would make it).
fn write(dir: &Path, cert: &Cert) -> PathBuf {
    fs::create_dir_all(dir).expect("mkdir");
    if !dir.join(MANIFEST).exists() {
        fs::write(dir.join(MANIFEST), Manifest::new().render()).expect("manifest");
    }
    let name = cert.fingerprint().to_hex().to_lowercase();
    let path = dir.join(&name[..2]).join(&name[2..]);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(&path, cert.to_vec().expect("serialize")).expect("write");
    path
}

fn usable_fingerprint(lookup: Lookup) -> Fingerprint {
    match lookup {
        Lookup::Usable(certs) => certs[0].fingerprint(),
        other => panic!("expected a usable certificate, got {other:?}"),
    }
}

#[test]
fn normalisation_case_and_subaddress() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let alice = cert(&["Alice <Alice.Smith@Example.ORG>"]);
    let bare = cert(&["Bare.Address@Example.ORG"]);
    write(tmp.path(), &alice);
    write(tmp.path(), &bare);
    let store = KeyStore::open(tmp.path()).expect("open");
    assert_eq!(store.len(), 2);
    assert_eq!(
        usable_fingerprint(store.lookup("bare.address+x@example.org")),
        bare.fingerprint()
    );
    for address in [
        "alice.smith@example.org",
        "ALICE.SMITH@EXAMPLE.ORG",
        "Alice.Smith+lists@Example.org",
        "alice.smith+a+b@example.org",
    ] {
        assert_eq!(
            usable_fingerprint(store.lookup(address)),
            alice.fingerprint(),
            "{address}"
        );
    }
    for address in [
        "bob@example.org",
        "alice.smith@example.com",
        "+alice.smith@example.org",
        "alice",
        "",
    ] {
        assert!(matches!(store.lookup(address), Lookup::None), "{address}");
    }
}

#[test]
fn exact_tagged_address_wins_over_base() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = cert(&["<carol@example.org>"]);
    let tagged = cert(&["<carol+work@example.org>"]);
    write(tmp.path(), &base);
    write(tmp.path(), &tagged);
    let store = KeyStore::open(tmp.path()).expect("open");
    assert_eq!(
        usable_fingerprint(store.lookup("carol+work@example.org")),
        tagged.fingerprint()
    );
    assert_eq!(
        usable_fingerprint(store.lookup("carol+home@example.org")),
        base.fingerprint()
    );
    assert_eq!(store.certificates_for("Carol+Home@example.org").len(), 1);
}

#[test]
fn several_certificates_for_one_address() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let uid = ["<dan@example.org>"];
    let old_usable = created_ago(&uid, 20 * DAY);
    let new_usable = created_ago(&uid, 10 * DAY);
    let newest_revoked = revoked(&uid, DAY);
    for cert in [&old_usable, &new_usable, &newest_revoked] {
        write(tmp.path(), cert);
    }
    let store = KeyStore::open(tmp.path()).expect("open");
    assert_eq!(store.certificates_for("dan@example.org").len(), 3);
    // A usable one beats a newer unusable one; every usable one is used, newest first.
    match store.lookup("dan@example.org") {
        Lookup::Usable(certs) => assert_eq!(
            certs.iter().map(|c| c.fingerprint()).collect::<Vec<_>>(),
            vec![new_usable.fingerprint(), old_usable.fingerprint()]
        ),
        other => panic!("expected usable, got {other:?}"),
    }
}

#[test]
fn none_usable_reports_the_newest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let uid = ["<eve@example.org>"];
    let old_expired = expired(&uid); // created two years ago
    let new_revoked = revoked(&uid, DAY);
    write(tmp.path(), &old_expired);
    write(tmp.path(), &new_revoked);
    let store = KeyStore::open(tmp.path()).expect("open");
    match store.lookup("eve@example.org") {
        Lookup::Unusable {
            fingerprint,
            reason,
        } => {
            assert_eq!(fingerprint, new_revoked.fingerprint().to_hex());
            assert_eq!(reason, Unusable::Revoked);
        }
        other => panic!("expected unusable, got {other:?}"),
    }
    fs::remove_file(write(tmp.path(), &new_revoked)).expect("remove");
    store.reload(false).expect("reload");
    assert!(matches!(
        store.lookup("eve@example.org"),
        Lookup::Unusable {
            reason: Unusable::Expired,
            ..
        }
    ));
}

#[test]
fn primary_only_certificate_is_indexed_as_unusable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dave = CertBuilder::new()
        .add_userid("<dave@example.org>")
        .generate()
        .expect("generate")
        .0;
    write(tmp.path(), &dave);
    let store = KeyStore::open(tmp.path()).expect("open");
    assert!(matches!(
        store.lookup("dave@example.org"),
        Lookup::Unusable {
            reason: Unusable::NoEncryptionSubkey,
            ..
        }
    ));
}

#[test]
fn only_self_signed_user_ids_are_indexed() {
    // A user ID without a self-signature (anyone can append one) must not route mail.
    let mallory = cert(&["<mallory@example.org>"]);
    let (with_foreign_uid, _) = mallory
        .insert_packets(UserID::from("<victim@example.org>"))
        .expect("insert");
    assert_eq!(with_foreign_uid.userids().count(), 2);
    assert_eq!(
        email_addresses(&with_foreign_uid),
        vec!["mallory@example.org".to_string()]
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    write(tmp.path(), &with_foreign_uid);
    let store = KeyStore::open(tmp.path()).expect("open");
    assert!(matches!(store.lookup("victim@example.org"), Lookup::None));
    assert!(matches!(
        store.lookup("mallory@example.org"),
        Lookup::Usable(_)
    ));
}

#[test]
fn junk_is_skipped_and_special_names_ignored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let good = cert(&["<frank@example.org>"]);
    write(tmp.path(), &good);
    // A fingerprint-shaped file with garbage, one whose content is another certificate,
    // and cert-d special and vendor files.
    let junk = tmp.path().join("ab").join("c".repeat(38));
    fs::create_dir_all(junk.parent().expect("parent")).expect("mkdir");
    fs::write(&junk, b"not an OpenPGP certificate").expect("write");
    let other = cert(&["<grace@example.org>"]);
    let misplaced = tmp.path().join("cd").join("e".repeat(38));
    fs::create_dir_all(misplaced.parent().expect("parent")).expect("mkdir");
    fs::write(&misplaced, other.to_vec().expect("serialize")).expect("write");
    fs::write(tmp.path().join("trust-root"), b"junk").expect("write");
    fs::write(tmp.path().join("_sealgate_note"), b"junk").expect("write");
    fs::write(tmp.path().join("writelock"), b"").expect("write");

    let store = KeyStore::open(tmp.path()).expect("open");
    let stats = store.reload(true).expect("reload");
    assert_eq!(stats.certificates, 1);
    assert_eq!(stats.addresses, 1);
    assert_eq!(stats.skipped, 2);
    assert_eq!(stats.problems, 2);
    assert!(matches!(
        store.lookup("frank@example.org"),
        Lookup::Usable(_)
    ));
    // Whose the bad entries are nobody knows: everyone without a key is unknown.
    match store.lookup("grace@example.org") {
        Lookup::Unknown { reason } => assert!(reason.contains(&"c".repeat(38)), "{reason}"),
        other => panic!("expected unknown, got {other:?}"),
    }
}

#[test]
fn reload_picks_up_new_and_removed_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("keys");
    init(&dir).expect("init");
    let store = KeyStore::open(&dir).expect("open");
    assert!(store.is_empty());
    assert!(store.problems().is_empty());
    let before = store.loaded_at();

    let heidi = cert(&["<heidi@example.org>"]);
    let path = write(&dir, &heidi);
    let stats = store.reload(false).expect("reload");
    assert_eq!(
        stats,
        ReloadStats {
            certificates: 1,
            addresses: 1,
            skipped: 0,
            problems: 0,
            changed: true
        }
    );
    assert!(matches!(
        store.lookup("heidi@example.org"),
        Lookup::Usable(_)
    ));
    assert!(store.loaded_at() >= before);

    let unchanged = store.reload(false).expect("reload");
    assert!(!unchanged.changed);
    assert_eq!(unchanged.certificates, 1);

    fs::remove_file(path).expect("remove");
    let stats = store.reload(false).expect("reload");
    assert!(stats.changed);
    assert_eq!(stats.certificates, 0);
    assert!(matches!(store.lookup("heidi@example.org"), Lookup::None));
    assert!(!store.reload(false).expect("reload").changed);
}

#[test]
fn settled_tag_skips_the_directory_walk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ivan = cert(&["<ivan@example.org>"]);
    let path = write(tmp.path(), &ivan);
    // Age the directory past RACY_MARGIN, so the tag is trusted.
    let old = SystemTime::now() - 10 * RACY_MARGIN;
    let subdir = fs::File::open(path.parent().expect("parent")).expect("open dir");
    subdir.set_modified(old).expect("set mtime");
    let store = KeyStore::open(tmp.path()).expect("open");
    assert!(store.current().tag.is_some());
    let first = Arc::clone(&store.current().certs.values().next().expect("entry").cert);

    let unchanged = store.reload(false).expect("reload");
    assert!(!unchanged.changed);
    // Same parsed certificate, not a re-read.
    let again = Arc::clone(&store.current().certs.values().next().expect("entry").cert);
    assert!(Arc::ptr_eq(&first, &again));

    // A change moves the mtime and so the tag.
    fs::remove_file(&path).expect("remove");
    let stats = store.reload(false).expect("reload");
    assert!(stats.changed);
    assert!(store.is_empty());
}

#[test]
fn reload_error_keeps_the_index() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("keys");
    let judy = cert(&["<judy@example.org>"]);
    write(&dir, &judy);
    let store = KeyStore::open(&dir).expect("open");
    fs::remove_dir_all(&dir).expect("rm");
    let err = store.reload(true).expect_err("directory gone");
    assert!(matches!(err, KeyStoreError::Read { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot read key store directory")
    );
    assert!(matches!(
        store.lookup("judy@example.org"),
        Lookup::Usable(_)
    ));
    // Nothing else can be answered.
    assert!(matches!(
        store.lookup("kim@example.org"),
        Lookup::Unknown { .. }
    ));
    assert!(store.problems()[0].blind);
}

#[test]
fn a_missing_or_unreadable_directory_is_unknown() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("file");
    fs::write(&file, b"").expect("write");
    for dir in [tmp.path().join("absent"), file.join("keys")] {
        let store = KeyStore::open(&dir).expect("open");
        assert!(!dir.exists(), "open must not create {}", dir.display());
        match store.lookup("bob@example.org") {
            Lookup::Unknown { reason } => {
                assert!(reason.contains(&*dir.display().to_string()), "{reason}");
            }
            other => panic!("expected unknown, got {other:?}"),
        }
    }
}

#[test]
fn manifest_round_trip_and_refusals() {
    let mut manifest = Manifest::new();
    assert_eq!(manifest.id.len(), 32);
    assert_ne!(manifest.id, Manifest::new().id);
    manifest.fingerprints.insert("ab".repeat(20));
    let text = manifest.render();
    assert_eq!(Manifest::parse(&text), Ok(manifest.clone()));
    for bad in [
        "",
        "id 00112233445566778899aabbccddeeff\n",
        "sealgate-keystore 1\n",
        "sealgate-keystore 1\nid 0011\n",
        "sealgate-keystore 1\nid 00112233445566778899aabbccddeeff\ncert 1234\n",
        "sealgate-keystore 1\nid 00112233445566778899aabbccddeeff\nrm -rf\n",
    ] {
        assert!(Manifest::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn no_manifest_is_unknown_until_init_or_reindex() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = KeyStore::open(tmp.path()).expect("open");
    assert!(matches!(
        store.lookup("x@example.org"),
        Lookup::Unknown { .. }
    ));
    let id = init(tmp.path()).expect("init").id;
    assert_eq!(
        init(tmp.path()).expect("again").id,
        id,
        "init keeps the manifest"
    );
    store.reload(false).expect("reload");
    assert!(store.problems().is_empty(), "{:?}", store.problems());
    assert!(matches!(store.lookup("x@example.org"), Lookup::None));
    assert_eq!(store.manifest_id(), Some(id.clone()));

    // Certificates without a manifest (a store written by sq, or an old sealgate):
    // init refuses, reindex accepts them.
    let other = tempfile::tempdir().expect("tempdir");
    let olga = cert(&["<olga@example.org>"]);
    let name = olga.fingerprint().to_hex().to_lowercase();
    let path = entry_path(other.path(), &name);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(&path, olga.to_vec().expect("serialize")).expect("write");
    let err = init(other.path()).expect_err("refused");
    assert!(err.to_string().contains("reindex"), "{err}");
    let store = KeyStore::open(other.path()).expect("open");
    assert!(matches!(
        store.lookup("x@example.org"),
        Lookup::Unknown { .. }
    ));
    assert!(matches!(
        store.lookup("olga@example.org"),
        Lookup::Usable(_)
    ));
    assert_eq!(
        reindex(other.path()).expect("reindex").fingerprints,
        BTreeSet::from([name])
    );
    store.reload(false).expect("reload");
    assert!(matches!(store.lookup("x@example.org"), Lookup::None));
}

#[test]
fn a_bad_entry_keeps_its_last_good_copy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    init(tmp.path()).expect("init");
    let pat = cert(&["<pat@example.org>"]);
    let stored = insert(tmp.path(), &pat).expect("insert");
    let path = entry_path(tmp.path(), &stored.fingerprint().to_hex().to_lowercase());
    let store = KeyStore::open(tmp.path()).expect("open");
    assert!(store.problems().is_empty());

    // Truncated in place: the cert-d tag (directory mtimes) does not move.
    let data = fs::read(&path).expect("read");
    fs::write(&path, &data[..data.len() / 2]).expect("truncate");
    let stats = store.reload(false).expect("reload");
    assert_eq!((stats.skipped, stats.problems), (1, 1));
    let problems = store.problems();
    assert_eq!(problems[0].path, path);
    assert!(!problems[0].blind);
    assert_eq!(
        usable_fingerprint(store.lookup("pat@example.org")),
        pat.fingerprint()
    );
    // The entry is known to be pat's: others are still answered.
    assert!(matches!(store.lookup("quinn@example.org"), Lookup::None));
    let errors = store.reload_errors();
    assert!(errors >= 1);

    // A fresh start cannot know whose it is.
    let fresh = KeyStore::open(tmp.path()).expect("open");
    assert!(matches!(
        fresh.lookup("pat@example.org"),
        Lookup::Unknown { .. }
    ));
    assert!(matches!(
        fresh.lookup("quinn@example.org"),
        Lookup::Unknown { .. }
    ));

    // Repaired: healthy again.
    fs::write(&path, &data).expect("repair");
    store.reload(false).expect("reload");
    assert!(store.problems().is_empty());
    fresh.reload(false).expect("reload");
    assert!(matches!(fresh.lookup("quinn@example.org"), Lookup::None));
}

#[test]
fn a_store_that_shrinks_is_noticed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("keys");
    init(&dir).expect("init");
    let rae = insert(&dir, &cert(&["<rae@example.org>"])).expect("insert");
    let name = rae.fingerprint().to_hex().to_lowercase();
    let listed = read_manifest(&dir).expect("read").expect("present");
    assert!(listed.fingerprints.contains(&name));
    let store = KeyStore::open(&dir).expect("open");

    // The file deleted behind sealgate's back: still encrypted to, store degraded.
    fs::remove_file(entry_path(&dir, &name)).expect("rm");
    store.reload(false).expect("reload");
    assert!(matches!(store.lookup("rae@example.org"), Lookup::Usable(_)));
    assert!(matches!(store.lookup("sam@example.org"), Lookup::None));
    assert_eq!(store.problems().len(), 1);
    let fresh = KeyStore::open(&dir).expect("open");
    assert!(matches!(
        fresh.lookup("rae@example.org"),
        Lookup::Unknown { .. }
    ));

    // The directory replaced by an empty one (a volume that did not mount).
    fs::remove_dir_all(&dir).expect("rm");
    fs::create_dir(&dir).expect("mkdir");
    store.reload(false).expect("reload");
    assert!(matches!(
        store.lookup("sam@example.org"),
        Lookup::Unknown { .. }
    ));
    assert!(matches!(store.lookup("rae@example.org"), Lookup::Usable(_)));
}

#[test]
fn remove_updates_the_manifest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tia = insert(tmp.path(), &cert(&["<tia@example.org>"])).expect("insert");
    let store = KeyStore::open(tmp.path()).expect("open");
    assert!(store.problems().is_empty(), "{:?}", store.problems());
    assert!(remove(tmp.path(), &tia.fingerprint()).expect("remove"));
    store.reload(false).expect("reload");
    assert!(store.problems().is_empty(), "{:?}", store.problems());
    assert!(matches!(store.lookup("tia@example.org"), Lookup::None));
}

#[test]
fn insert_strips_secrets_and_third_party_certifications_and_merges() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (kate, _) = builder(&["<kate@example.org>"])
        .generate()
        .expect("generate");
    assert!(kate.is_tsk());

    // A third party (Leo) certifies Kate's user ID.
    let (leo, _) = CertBuilder::general_purpose(Some("<leo@example.org>"))
        .generate()
        .expect("generate");
    let mut leo_signer = leo
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .expect("secret")
        .into_keypair()
        .expect("keypair");
    let uid = kate.userids().next().expect("uid").userid().clone();
    let certification = uid
        .certify(
            &mut leo_signer,
            &kate,
            SignatureType::GenericCertification,
            None,
            None,
        )
        .expect("certify");
    let (certified, _) = kate
        .clone()
        .insert_packets(vec![Packet::from(uid), certification.into()])
        .expect("insert");
    let third_party = |c: &Cert| {
        c.userids()
            .map(|u| u.bundle().certifications().count())
            .sum::<usize>()
    };
    assert_eq!(third_party(&certified), 1);

    let stored = insert(tmp.path(), &certified).expect("insert");
    assert!(!stored.is_tsk());
    assert_eq!(third_party(&stored), 0);
    assert_eq!(stored.userids().count(), 1);
    let on_disk = certd::stored(tmp.path(), &kate.fingerprint())
        .expect("read")
        .expect("present");
    assert!(!on_disk.is_tsk());
    assert_eq!(third_party(&on_disk), 0);

    // A second import with a new self-signed user ID merges with the stored copy.
    let mut kate_signer = kate
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .expect("secret")
        .into_keypair()
        .expect("keypair");
    let work = UserID::from("<kate@work.example>");
    let binding = work
        .bind(
            &mut kate_signer,
            &kate,
            SignatureBuilder::new(SignatureType::PositiveCertification),
        )
        .expect("bind");
    let (update, _) = kate
        .strip_secret_key_material()
        .insert_packets(vec![Packet::from(work), binding.into()])
        .expect("insert");
    let merged = insert(tmp.path(), &update).expect("insert");
    assert_eq!(
        email_addresses(&merged),
        vec![
            "kate@example.org".to_string(),
            "kate@work.example".to_string()
        ]
    );
    let store = KeyStore::open(tmp.path()).expect("open");
    assert!(matches!(
        store.lookup("kate@work.example"),
        Lookup::Usable(_)
    ));
}

#[test]
fn remove_under_the_lock() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let liam = cert(&["<liam@example.org>"]);
    insert(tmp.path(), &liam).expect("insert");
    assert!(remove(tmp.path(), &liam.fingerprint()).expect("remove"));
    assert!(!remove(tmp.path(), &liam.fingerprint()).expect("remove again"));
    assert!(
        certd::stored(tmp.path(), &liam.fingerprint())
            .expect("read")
            .is_none()
    );
    let missing_dir = tmp.path().join("nothing-here");
    assert!(!remove(&missing_dir, &liam.fingerprint()).expect("remove"));
}

#[test]
fn watch_reloads_in_the_background() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(KeyStore::open(tmp.path()).expect("open"));
    watch::watch(store.clone(), watch::MIN_WATCH_INTERVAL);
    let mia = cert(&["<mia@example.org>"]);
    write(tmp.path(), &mia);
    // Poll for the condition with a deadline (no sleep-as-synchronisation).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(store.lookup("mia@example.org"), Lookup::Usable(_)) {
        assert!(
            Instant::now() < deadline,
            "watcher did not pick up the new file"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn verdict_is_cached_and_refreshed() {
    let entry = Entry::new(cert(&["<nina@example.org>"]), 0);
    assert_eq!(entry.verdict(), Ok(()));
    let cached = entry.verdict.lock().expect("lock").clone().expect("cached");
    // Pretend the verdict is older than the TTL: it is recomputed.
    *entry.verdict.lock().expect("lock") = Some(Verdict {
        result: Err(Unusable::Expired),
        checked: cached.checked - 2 * VERDICT_TTL,
        until: None,
    });
    assert_eq!(entry.verdict(), Ok(()));
    // A fresh cached verdict is reused as is.
    *entry.verdict.lock().expect("lock") = Some(Verdict {
        result: Err(Unusable::Revoked),
        checked: Instant::now(),
        until: None,
    });
    assert_eq!(entry.verdict(), Err(Unusable::Revoked));
    // One past its `until` (the primary key's expiry) is not.
    *entry.verdict.lock().expect("lock") = Some(Verdict {
        result: Err(Unusable::Revoked),
        checked: Instant::now(),
        until: Some(SystemTime::now() - DAY),
    });
    assert_eq!(entry.verdict(), Ok(()));
}

#[test]
fn keystore_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<KeyStore>();
    assert_send_sync::<Lookup>();
}
