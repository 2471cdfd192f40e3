//! Test certificates: a fresh CA and one certificate it signs (rcgen, P-256). Included
//! with `#[path]`.

#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA and a certificate it signed, PEM.
pub struct Issued {
    pub ca_pem: String,
    pub certificate_pem: String,
    pub key_pem: String,
}

/// A new CA, and a server (or, with `client`, a client) certificate for
/// `subject_alt_names` signed by it.
pub fn issue(subject_alt_names: &[&str], client: bool) -> Issued {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fuota test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = subject_alt_names
        .iter()
        .map(|name| name.to_string())
        .collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, if client { "gw-tls" } else { "server" });
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let certificate = params.signed_by(&key, &issuer).unwrap();
    Issued {
        ca_pem: ca.pem(),
        certificate_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
    }
}
