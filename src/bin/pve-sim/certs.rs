//! The simulator's TLS identity: a CA made at startup (written as PEM for clients that
//! verify with a CA file, like a copy of /etc/pve/pve-root-ca.pem) and a leaf for
//! 127.0.0.1/localhost signed by it, whose SHA-256 fingerprint is published for clients
//! that pin it, like `pvenode cert info` shows it.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

pub struct Identity {
    pub ca_pem: String,
    pub leaf_chain: Vec<CertificateDer<'static>>,
    pub leaf_key: PrivateKeyDer<'static>,
    /// `AA:BB:…`, of the leaf.
    pub fingerprint: String,
}

pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `names`: the leaf's subject alternative names (IP addresses or DNS names).
pub fn generate(node: &str, names: &[String]) -> Result<Identity, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "pve-sim Proxmox Virtual Environment CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name
        .push(DnType::CommonName, format!("{node}.pve-sim"));
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(Identity {
        ca_pem: ca_cert.pem(),
        fingerprint: fingerprint(leaf_cert.der()),
        leaf_chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()],
        leaf_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    })
}
