//! DKIM signing for the tests: an RSA key made with `openssl`, its record for the test zone,
//! and messages signed with it (by mail-auth, the library the server verifies with; the
//! signature is checked by the server against the key it fetches from the real DNS server).

use std::process::Command;

use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A DKIM signing key for `domain`, published at `SELECTOR._domainkey.DOMAIN`.
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    /// The private key, PKCS#8 DER.
    private: Vec<u8>,
    /// The public key (SubjectPublicKeyInfo DER), base64, as `p=` carries it.
    public: String,
}

impl DkimKey {
    /// A new 2048-bit RSA key (its record is longer than one TXT character-string, so the
    /// test also shows that the server joins a record's strings).
    pub fn generate(domain: &str, selector: &str) -> DkimKey {
        // genpkey's DER is PKCS#1 on OpenSSL 3.0; pkcs8 -topk8 makes it PKCS#8 whatever the version.
        let pem = openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], None);
        let private = openssl(&["pkcs8", "-topk8", "-nocrypt", "-outform", "DER"], Some(&pem));
        let public_der = openssl(&["pkey", "-inform", "DER", "-pubout", "-outform", "DER"], Some(&private));
        use base64::Engine;
        let public = base64::engine::general_purpose::STANDARD.encode(public_der);
        DkimKey { domain: domain.into(), selector: selector.into(), private, public }
    }

    /// The key's TXT record, as a zone-file line: `p=` split into character-strings of at
    /// most 200 octets, as DNS needs for anything over 255.
    pub fn zone_record(&self) -> String {
        let text = format!("v=DKIM1; k=rsa; p={}", self.public);
        let strings: Vec<String> =
            text.as_bytes().chunks(200).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
        format!("{}._domainkey.{}. 300 IN TXT {}", self.selector, self.domain, strings.join(" "))
    }

    /// `message` (CRLF lines, header then body) with a `DKIM-Signature` field on top, signing
    /// From, To, Subject and Date.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let key = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.private.clone())))
            .expect("the RSA key loads");
        let signature = DkimSigner::from_key(key)
            .domain(self.domain.clone())
            .selector(self.selector.clone())
            .headers(["From", "To", "Subject", "Date"])
            .sign(message)
            .expect("signing");
        let mut signed = signature.to_header().into_bytes();
        signed.extend_from_slice(message);
        signed
    }
}

/// Runs openssl with `input` on stdin; its stdout.
fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("running openssl (cargo xtask test installs it)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}
