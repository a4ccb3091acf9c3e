//! Connection settings (TLS above all), the rustls configurations built from them, and the ids
//! that keep connections made with different settings apart in the pool.

use super::HttpError;
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verify {
    /// Against the bundled Mozilla roots (what certifi gives httpx).
    Default,
    /// Against the CA certificates of a PEM file.
    CaFile(PathBuf),
    /// Not at all (`verify=False`): only when the user asks.
    Off,
}

/// Everything that makes two connections to one origin different: TLS settings, the HTTP
/// versions spoken, the local address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectSettings {
    pub verify: Verify,
    /// A client certificate chain and its private key, both PEM files.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The HTTP versions offered in the handshake (ALPN); the server picks one.
    pub versions: Versions,
    /// The local address sockets are bound to (httpx's `local_address`); only addresses of its
    /// family are connected to.
    pub local_address: Option<IpAddr>,
}

/// Which HTTP versions a client speaks (httpx's `http1` and `http2` arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Versions {
    pub http1: bool,
    pub http2: bool,
}

impl Default for Versions {
    fn default() -> Self {
        Versions { http1: true, http2: false }
    }
}

impl Default for ConnectSettings {
    fn default() -> Self {
        ConnectSettings { verify: Verify::Default, client_cert: None, versions: Versions::default(), local_address: None }
    }
}

/// What every client with the same settings shares: the number in their pool keys, and one
/// rustls configuration, so that the TLS sessions a server gave out on one connection resume
/// the next one (a round trip and a certificate check saved), whichever client opens it (rustls
/// resumes a session only under the configuration that stored it).
struct Profile {
    id: u32,
    /// Built at first use; a configuration that failed (a file that does not parse) is not kept.
    config: Option<Arc<ClientConfig>>,
}

/// Settings seen so far, numbered: 0 is the default, others get 1, 2, ... in order of first use.
static PROFILES: Lazy<Mutex<HashMap<ConnectSettings, Profile>>> =
    Lazy::new(|| Mutex::new(HashMap::from([(ConnectSettings::default(), Profile { id: 0, config: None })])));

impl ConnectSettings {
    /// The number that goes into a pool key for connections made with these settings.
    pub fn profile_id(&self) -> u32 {
        let mut profiles = PROFILES.lock();
        let next = profiles.len() as u32;
        profiles.entry(self.clone()).or_insert(Profile { id: next, config: None }).id
    }

    /// The rustls configuration shared by every client with these settings (files are read
    /// once, at first use).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, HttpError> {
        if let Some(config) = PROFILES.lock().get(self).and_then(|p| p.config.clone()) {
            return Ok(config);
        }
        let built = self.build_client_config()?;
        let id = self.profile_id();
        let mut profiles = PROFILES.lock();
        let profile = profiles.entry(self.clone()).or_insert(Profile { id, config: None });
        Ok(profile.config.get_or_insert(built).clone())
    }

    /// A new rustls configuration for these settings. File problems are errors that name the
    /// setting and the file, not its contents.
    fn build_client_config(&self) -> Result<Arc<ClientConfig>, HttpError> {
        let provider = rustls::crypto::ring::default_provider();
        let builder = ClientConfig::builder_with_provider(Arc::new(provider.clone()))
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpError::Config(format!("TLS setup failed: {e}")))?;
        let builder = match &self.verify {
            Verify::Off => builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification {
                algorithms: provider.signature_verification_algorithms,
            })),
            Verify::Default => builder.with_root_certificates(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
            Verify::CaFile(path) => {
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| file_error("verify", path, e))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| file_error("verify", path, e))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(HttpError::Config(format!(
                        "verify: no CA certificate found in {}",
                        path.display()
                    )));
                }
                builder.with_root_certificates(roots)
            }
        };
        let mut config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| file_error("cert", cert, e))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| file_error("cert", cert, e))?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("cert key", key, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| HttpError::Config(format!("cert: the client certificate is not usable: {e}")))?
            }
        };
        // Resumption (rustls's default: TLS 1.3 tickets and TLS 1.2 session ids, 256 servers'
        // worth), never 0-RTT early data (off by default, kept off): early data can be
        // replayed, and a request must reach a server at most once.
        config.enable_early_data = false;
        config.alpn_protocols = Vec::new();
        if self.versions.http2 {
            config.alpn_protocols.push(b"h2".to_vec());
        }
        if self.versions.http1 {
            config.alpn_protocols.push(b"http/1.1".to_vec());
        }
        Ok(Arc::new(config))
    }
}

fn file_error(setting: &str, path: &std::path::Path, e: impl std::fmt::Display) -> HttpError {
    HttpError::Config(format!("{setting}: cannot read PEM file {}: {e}", path.display()))
}

pub fn server_name(host: &str) -> Result<ServerName<'static>, HttpError> {
    ServerName::try_from(host.to_owned()).map_err(|_| HttpError::Config("the host is not a valid TLS server name".into()))
}

/// `verify=False`: accepts any certificate, still checks handshake signatures.
#[derive(Debug)]
struct NoVerification {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    // The TLS 1.2 and 1.3 checks mirror each other on purpose: rustls asks for each apart.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
