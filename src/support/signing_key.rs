//! rollbackd's signing key and the keys whose signatures it believes: OpenSSH ed25519 keys and
//! SSHSIG signatures in the namespace `git`, the format `git -c gpg.format=ssh` writes, so stock
//! git verifies what rollbackd signs (`git verify-commit`, `git verify-tag`).
//!
//! Anyone with push access can write notes, state refs and tags; a signature is what separates
//! rollbackd's own records from look-alikes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// The SSHSIG namespace git signs commits and tags in.
pub(crate) const NAMESPACE: &str = "git";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the signing key {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error(
        "the signing key {path} can be read by others (mode {mode:o}); `chmod 600` it: whoever reads it can sign as rollbackd"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("the signing key {from} is not an OpenSSH private key")]
    NotAKey { from: String },
    #[error("the signing key {from} is encrypted; give rollbackd an unencrypted key (it runs unattended)")]
    Encrypted { from: String },
    #[error("the signing key {from} is {algorithm}; rollbackd signs with ed25519 keys")]
    Algorithm { from: String, algorithm: String },
    #[error("cannot write a new signing key at {path}: {cause}")]
    Write { path: PathBuf, cause: String },
    #[error("trusted key {index}: `{shown}` is not an OpenSSH public key (`ssh-ed25519 AAAA... comment`)")]
    Trusted { index: usize, shown: String },
}

/// The private key. Formatting shows only the public key's fingerprint.
#[derive(Clone)]
pub struct SigningKey(Arc<PrivateKey>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.fingerprint())
    }
}

impl SigningKey {
    /// An OpenSSH private key's text; `from` names where it came from, for errors (never the
    /// text itself).
    pub fn from_openssh(text: &str, from: &str) -> Result<Self, KeyError> {
        let key = PrivateKey::from_openssh(text.trim().as_bytes())
            .map_err(|_| KeyError::NotAKey { from: from.to_string() })?;
        if key.is_encrypted() {
            return Err(KeyError::Encrypted { from: from.to_string() });
        }
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(KeyError::Algorithm { from: from.to_string(), algorithm: key.algorithm().to_string() });
        }
        Ok(SigningKey(Arc::new(key)))
    }

    /// Reads a key file, refused when anyone but its owner may read it (as ssh refuses).
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        check_private(path)?;
        let text = std::fs::read_to_string(path).map_err(|cause| KeyError::Read { path: path.into(), cause })?;
        Self::from_openssh(&text, &path.display().to_string())
    }

    /// The key at `path`, made there (mode 0600) when there is none yet. `true` when it was made.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        if path.exists() {
            return Self::read_file(path).map(|k| (k, false));
        }
        let write_err = |cause: String| KeyError::Write { path: path.into(), cause };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| write_err(e.to_string()))?;
        }
        let mut key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
            .map_err(|e| write_err(e.to_string()))?;
        key.set_comment("rollbackd");
        // Written beside and renamed, so a crash never leaves half a key, and two processes
        // starting at once end with one key between them.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        key.write_openssh_file(&tmp, LineEnding::LF).map_err(|e| write_err(e.to_string()))?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => {
                let _ = std::fs::remove_file(&tmp);
                Ok((SigningKey(Arc::new(key)), true))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(&tmp);
                Self::read_file(path).map(|k| (k, false))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(write_err(e.to_string()))
            }
        }
    }

    pub fn public(&self) -> &PublicKey {
        self.0.public_key()
    }

    /// `ssh-ed25519 AAAA... comment`: what goes into `identity.trusted_keys` of another replica,
    /// and into GitHub's "SSH signing keys".
    pub fn public_openssh(&self) -> String {
        self.public().to_openssh().unwrap_or_default()
    }

    /// The line for git's `gpg.ssh.allowedSignersFile`.
    pub fn allowed_signers_line(&self, email: &str) -> String {
        format!("{email} namespaces=\"{NAMESPACE}\" {}", self.public_openssh())
    }

    pub fn fingerprint(&self) -> String {
        self.public().fingerprint(HashAlg::Sha256).to_string()
    }

    /// An armored SSHSIG over `data` (`-----BEGIN SSH SIGNATURE-----`, ending in a newline).
    pub fn sign(&self, data: &[u8]) -> String {
        // Signing with an ed25519 key in memory cannot fail; the fallback keeps this total.
        self.0.sign(NAMESPACE, HashAlg::Sha512, data).and_then(|s| s.to_pem(LineEnding::LF)).unwrap_or_default()
    }
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|cause| KeyError::Read { path: path.into(), cause })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed { path: path.into(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path) -> Result<(), KeyError> {
    Ok(())
}

/// Whose signatures count.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

/// What a signature check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signed {
    /// Signed by this trusted key (its SHA256 fingerprint).
    By(String),
    Unsigned,
    /// Signed, but not by a trusted key, not in namespace `git`, or not over these bytes.
    Bad(String),
}

impl Signed {
    pub fn trusted(&self) -> bool {
        matches!(self, Signed::By(_))
    }
}

impl TrustedKeys {
    /// `ssh-ed25519 AAAA... comment` lines (an allowed-signers line's key part also works:
    /// anything before the key type is skipped).
    pub fn parse(lines: &[String]) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for (index, line) in lines.iter().enumerate() {
            let at = line.find("ssh-").unwrap_or(0);
            let key = PublicKey::from_openssh(line[at..].trim()).map_err(|_| KeyError::Trusted {
                index,
                shown: crate::domain::ident::shown(&line.chars().take(40).collect::<String>()),
            })?;
            keys.push(key);
        }
        Ok(TrustedKeys { keys })
    }

    /// These keys and `own`.
    pub fn with(mut self, own: &PublicKey) -> Self {
        if !self.keys.iter().any(|k| k.key_data() == own.key_data()) {
            self.keys.insert(0, own.clone());
        }
        self
    }

    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.fingerprint(HashAlg::Sha256).to_string()).collect()
    }

    /// Checks an armored SSHSIG over `data`.
    pub fn check(&self, data: &[u8], armored: &[u8]) -> Signed {
        let Ok(sig) = SshSig::from_pem(armored) else { return Signed::Bad("not an SSH signature".into()) };
        if sig.namespace() != NAMESPACE {
            return Signed::Bad(format!(
                "signed for `{}`, not `{NAMESPACE}`",
                crate::domain::ident::shown(sig.namespace())
            ));
        }
        let Some(key) = self.keys.iter().find(|k| k.key_data() == sig.public_key()) else {
            return Signed::Bad("signed by a key that is not trusted".into());
        };
        match key.verify(NAMESPACE, data, &sig) {
            Ok(()) => Signed::By(key.fingerprint(HashAlg::Sha256).to_string()),
            Err(_) => Signed::Bad("the signature does not match the content".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_signs_and_only_trusted_keys_verify() {
        let dir = tempfile::tempdir().unwrap();
        let (key, made) = SigningKey::load_or_create(&dir.path().join("k")).unwrap();
        assert!(made);
        let (again, made) = SigningKey::load_or_create(&dir.path().join("k")).unwrap();
        assert!(!made);
        assert_eq!(key.fingerprint(), again.fingerprint());
        let sig = key.sign(b"hello");
        let trusted = TrustedKeys::default().with(key.public());
        assert!(trusted.check(b"hello", sig.as_bytes()).trusted());
        assert!(!trusted.check(b"hellO", sig.as_bytes()).trusted());
        let (other, _) = SigningKey::load_or_create(&dir.path().join("o")).unwrap();
        let by_other = other.sign(b"hello");
        assert!(matches!(trusted.check(b"hello", by_other.as_bytes()), Signed::Bad(_)));
        assert!(format!("{key:?}").starts_with("SigningKey(SHA256:"));
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        SigningKey::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SigningKey::read_file(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn trusted_keys_read_allowed_signers_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = SigningKey::load_or_create(&dir.path().join("k")).unwrap();
        let keys = TrustedKeys::parse(&[key.allowed_signers_line("r@x")]).unwrap();
        assert_eq!(keys.fingerprints(), vec![key.fingerprint()]);
        assert!(TrustedKeys::parse(&["nonsense".into()]).is_err());
    }
}
