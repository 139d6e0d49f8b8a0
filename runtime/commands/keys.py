"""`edgewatch keys`: Ed25519 key pairs for signed artifacts (edge_config.signing).

    edgewatch keys generate --private FILE --public FILE
        a new key pair: the private key (PKCS#8 PEM, mode 0600) signs (`edgewatch export --sign
        FILE`) and stays off the gateways; the public key (SubjectPublicKeyInfo PEM) goes to each
        gateway's trust.public_keys. Prints the key id a signature names. Existing files are
        never overwritten.

The files are what `openssl genpkey -algorithm ed25519 -out FILE` and `openssl pkey -in FILE
-pubout -out PUBLIC` write: either tool will do.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _generate(args: argparse.Namespace) -> int:
    from edge_config.signing import generate_keys

    key_id = generate_keys(args.private, args.public)
    print(f"key {key_id}: private {args.private} (keep it off the gateways), public {args.public}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("keys", help="create Ed25519 key pairs for signed artifacts")
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = sub.add_parser("generate", help="write a new key pair (never overwrites)")
    gen.add_argument("--private", type=Path, required=True, metavar="FILE", help="private key to write (PEM, 0600)")
    gen.add_argument("--public", type=Path, required=True, metavar="FILE", help="public key to write (PEM)")
    gen.set_defaults(func=_generate)
