"""Signing keys for C2PA manifests: the operator's, a KMS/HSM callback, or a local CA made on first start.

The local set lives in `<data_dir>/provenance/`: `ca.pem` (the CA certificate a reader must trust),
`signing-chain.pem` (the signing certificate, then the CA) and `signing-key.pem` (PKCS#8, mode 0600). The
CA's own private key is used once, to issue the signing certificate, and never written anywhere: nobody
can issue a second certificate under it. The certificates follow C2PA's certificate profile: ECDSA P-256,
the signing certificate is not a CA, has digitalSignature key usage, the emailProtection extended key
usage, and subject/authority key identifiers.
"""

from __future__ import annotations

import datetime
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nanobanana.errors import ProvenanceError
from nanobanana.provenance.config import CERT_CHAIN_ENV, PRIVATE_KEY_ENV, SignerConfig

CA_FILE = "ca.pem"
CHAIN_FILE = "signing-chain.pem"
KEY_FILE = "signing-key.pem"
CA_YEARS = 10
SIGNER_YEARS = 2


@dataclass(frozen=True)
class SigningMaterial:
    """What `c2pa.Signer` needs: the chain (PEM) and either a private key (PEM) or a signing callback."""

    chain: bytes
    private_key: bytes | None
    callback: Callable[[bytes], bytes] | None
    source: str  # where it came from, for the policy page and logs (never the key itself)


def key_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "provenance"


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` readable by this user only (0600) from the start: the key never sits world-readable."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(temp, path)


def _name(common_name: str, operator: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, operator[:64])])


def create_local_ca(folder: Path, operator: str = "Nanobanana", *, force: bool = False) -> Path:
    """Make a local CA and a signing certificate + key in `folder` (see the module docstring); returns the
    CA file. Refuses to replace an existing set unless `force`."""
    folder = Path(folder)
    if (folder / KEY_FILE).exists() and not force:
        raise ProvenanceError(f"A signing key already exists in {folder.name}/; use --force to replace it "
                              "(images signed with the old one stay valid for readers that trust the old CA).")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    # Named apart from other instances' CAs by its own key, not the machine's host name: the names travel
    # in every signed file, to anyone.
    instance = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()).digest.hex()[:8]
    ca_name = _name(f"Nanobanana local CA ({instance})", operator)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(_name(f"Nanobanana content signer ({instance})", operator))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365 * SIGNER_YEARS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    _write_private(folder / KEY_FILE, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    (folder / CHAIN_FILE).write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (folder / CA_FILE).write_bytes(ca.public_bytes(pem))
    return folder / CA_FILE


def _create_once(folder: Path, operator: str) -> None:
    """Make the local set unless another process (a second worker starting at the same moment) just did:
    two sets written at once could leave one's key beside the other's certificate."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / KEY_FILE).exists():
            create_local_ca(folder, operator)


def _callback(reference: str) -> Callable[[bytes], bytes]:
    module_name, _, attribute = reference.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ProvenanceError(f"c2pa.signer.callback {reference!r} is not an importable 'module:function' "
                              f"({type(exc).__name__}).") from exc
    if not callable(function):
        raise ProvenanceError(f"c2pa.signer.callback {reference!r} is not callable.")
    return function


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ProvenanceError(f"The C2PA {what} ({Path(path).name}) cannot be read: {exc.strerror}.") from None


def signing_material(config: SignerConfig, data_dir: Path, environ: Mapping[str, str], *,
                     operator: str = "Nanobanana") -> SigningMaterial:
    """The configured chain and key (or callback); with none configured, the local set, made if missing."""
    chain: bytes | None = None
    if environ.get(CERT_CHAIN_ENV):
        chain, chain_source = environ[CERT_CHAIN_ENV].encode(), f"${CERT_CHAIN_ENV}"
    elif config.certificate_chain is not None:
        chain, chain_source = _read(config.certificate_chain, "certificate chain"), "configured files"
    if config.callback:
        if chain is None:
            raise ProvenanceError("c2pa.signer.callback needs c2pa.signer.certificate_chain (or "
                                  f"${CERT_CHAIN_ENV}): the certificates of the key the KMS/HSM holds.")
        return SigningMaterial(chain, None, _callback(config.callback), f"KMS/HSM callback {config.callback}")
    key: bytes | None = None
    if environ.get(PRIVATE_KEY_ENV):
        key = environ[PRIVATE_KEY_ENV].encode()
    elif config.private_key is not None:
        key = _read(config.private_key, "private key")
    if chain is not None and key is not None:
        return SigningMaterial(chain, key, None, chain_source)
    if chain is not None or key is not None:
        raise ProvenanceError("Set both the C2PA certificate chain and its private key (or a callback), not one.")
    folder = key_dir(data_dir)
    if not (folder / KEY_FILE).exists():
        _create_once(folder, operator)
    return SigningMaterial(_read(folder / CHAIN_FILE, "certificate chain"), _read(folder / KEY_FILE, "private key"),
                           None, "local CA")


def local_trust_anchor(data_dir: Path) -> bytes | None:
    """This instance's own CA certificate, if it made one."""
    path = key_dir(data_dir) / CA_FILE
    return path.read_bytes() if path.is_file() else None


def signer_summary(chain: bytes) -> dict:
    """Who the first certificate of a chain names, and until when (for the policy page and `init`)."""
    cert = x509.load_pem_x509_certificates(chain)[0]
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "not_after": cert.not_valid_after_utc.date().isoformat()}
