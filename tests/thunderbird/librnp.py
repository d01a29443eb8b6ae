#!/usr/bin/env python3
"""Thunderbird's OpenPGP engine (its bundled librnp.so) driven through the C FFI with ctypes,
the calls Thunderbird's RNP.sys.mjs makes, for tests/integration/thunderbird.rs.

    librnp.py LIBRNP version
        {"version": rnp_version_string_full()}
    librnp.py LIBRNP generate HOME ecc|rsa3072 USERID
        Generates a key as Thunderbird's "generate new key" does (RNP.genKey: EdDSA primary +
        ECDH Curve25519 subkey, or RSA-3072 + RSA-3072; expiry three years, the dialog's
        default; no passphrase here), saves HOME/pubring.gpg and HOME/secring.gpg (the
        keyring files of a Thunderbird profile) and prints {"fingerprint", "public_key"
        (armored, with subkeys), "subkeys": [{"keyid", "alg", "bits", "curve", "encrypt"}]}.
    librnp.py LIBRNP decrypt HOME FILE
        Loads HOME's keyrings and decrypts FILE (an armored OpenPGP message) with
        rnp_op_verify_create + rnp_op_verify_execute, as RNP.decrypt does; prints {"result"
        (rnp_op_verify_execute's code), "result_text", "mode", "cipher", "valid",
        "recipients" (key IDs of every PKESK), "used_recipient", "used_alg",
        "signatures", "plaintext_hex"}.

Failures print the failing call and librnp's error text to stderr and exit 1.
"""

import ctypes
import json
import os
import sys
from ctypes import POINTER, byref, c_bool, c_char_p, c_size_t, c_uint32, c_void_p

RNP_LOAD_SAVE_PUBLIC_KEYS = 1 << 0
RNP_LOAD_SAVE_SECRET_KEYS = 1 << 1
RNP_KEY_EXPORT_ARMORED = 1 << 0
RNP_KEY_EXPORT_PUBLIC = 1 << 1
RNP_KEY_EXPORT_SUBKEYS = 1 << 3
THREE_YEARS = 3 * 365 * 24 * 3600
CURVE_ALGS = ("ECDH", "EDDSA", "ECDSA")
KEYRINGS = [("pubring.gpg", RNP_LOAD_SAVE_PUBLIC_KEYS), ("secring.gpg", RNP_LOAD_SAVE_SECRET_KEYS)]


class Rnp:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.rnp_version_string_full.restype = c_char_p
        self.lib.rnp_result_to_string.restype = c_char_p
        self.lib.rnp_result_to_string.argtypes = [c_uint32]
        self.lib.rnp_buffer_destroy.argtypes = [c_void_p]
        self.lib.rnp_buffer_destroy.restype = None

    def call(self, name, *args):
        """Calls an rnp_result_t function; raises on anything but RNP_SUCCESS."""
        rc = self.raw(name, *args)
        if rc != 0:
            text = self.lib.rnp_result_to_string(rc).decode()
            raise RuntimeError(f"{name} failed: 0x{rc:08x} {text}")

    def raw(self, name, *args):
        fn = getattr(self.lib, name)
        fn.restype = c_uint32
        return fn(*args)

    def string(self, name, handle, *args):
        """Calls `name(handle, ..., char **out)` and returns the string, freed with
        rnp_buffer_destroy."""
        out = c_void_p()
        self.call(name, handle, *args, byref(out))
        if not out.value:
            return None
        value = ctypes.string_at(out.value).decode()
        self.lib.rnp_buffer_destroy(out)
        return value

    def ffi(self):
        ffi = c_void_p()
        self.call("rnp_ffi_create", byref(ffi), b"GPG", b"GPG")
        return ffi

    def memory_output(self):
        output = c_void_p()
        self.call("rnp_output_to_memory", byref(output), c_size_t(0))
        return output

    def output_bytes(self, output):
        buf = POINTER(ctypes.c_uint8)()
        length = c_size_t()
        self.call("rnp_output_memory_get_buf", output, byref(buf), byref(length), c_bool(False))
        return ctypes.string_at(buf, length.value)


def generate(rnp, home, kind, userid):
    if kind == "ecc":
        primary_alg, sub_alg, bits, sub_curve = b"eddsa", b"ecdh", 0, b"Curve25519"
    elif kind == "rsa3072":
        primary_alg, sub_alg, bits, sub_curve = b"rsa", b"rsa", 3072, None
    else:
        raise RuntimeError(f"unknown key kind {kind}")
    ffi = rnp.ffi()
    op = c_void_p()
    rnp.call("rnp_op_generate_create", byref(op), ffi, primary_alg)
    rnp.call("rnp_op_generate_set_userid", op, userid.encode())
    if bits:
        rnp.call("rnp_op_generate_set_bits", op, c_uint32(bits))
    rnp.call("rnp_op_generate_set_expiration", op, c_uint32(THREE_YEARS))
    rnp.call("rnp_op_generate_execute", op)
    primary = c_void_p()
    rnp.call("rnp_op_generate_get_key", op, byref(primary))
    rnp.call("rnp_op_generate_destroy", op)

    op = c_void_p()
    rnp.call("rnp_op_generate_subkey_create", byref(op), ffi, primary, sub_alg)
    if bits:
        rnp.call("rnp_op_generate_set_bits", op, c_uint32(bits))
    if sub_curve:
        rnp.call("rnp_op_generate_set_curve", op, sub_curve)
    rnp.call("rnp_op_generate_set_expiration", op, c_uint32(THREE_YEARS))
    rnp.call("rnp_op_generate_execute", op)
    rnp.call("rnp_op_generate_destroy", op)

    fingerprint = rnp.string("rnp_key_get_fprint", primary)
    count = c_size_t()
    rnp.call("rnp_key_get_subkey_count", primary, byref(count))
    subkeys = []
    for i in range(count.value):
        sub = c_void_p()
        rnp.call("rnp_key_get_subkey_at", primary, c_size_t(i), byref(sub))
        bits_out = c_uint32()
        rnp.call("rnp_key_get_bits", sub, byref(bits_out))
        alg = rnp.string("rnp_key_get_alg", sub)
        encrypt = c_bool()
        rnp.call("rnp_key_allows_usage", sub, b"encrypt", byref(encrypt))
        subkeys.append(
            {
                "keyid": rnp.string("rnp_key_get_keyid", sub),
                "alg": alg,
                "bits": bits_out.value,
                "curve": rnp.string("rnp_key_get_curve", sub) if alg in CURVE_ALGS else None,
                "encrypt": encrypt.value,
            }
        )
        rnp.call("rnp_key_handle_destroy", sub)

    output = rnp.memory_output()
    rnp.call(
        "rnp_key_export",
        primary,
        output,
        c_uint32(RNP_KEY_EXPORT_ARMORED | RNP_KEY_EXPORT_PUBLIC | RNP_KEY_EXPORT_SUBKEYS),
    )
    public_key = rnp.output_bytes(output).decode()
    rnp.call("rnp_output_destroy", output)
    rnp.call("rnp_key_handle_destroy", primary)

    # The profile's keyring files, as Thunderbird's RNPLib.saveKeys writes them.
    for name, flags in KEYRINGS:
        output = c_void_p()
        rnp.call("rnp_output_to_path", byref(output), os.path.join(home, name).encode())
        rnp.call("rnp_save_keys", ffi, b"GPG", output, c_uint32(flags))
        rnp.call("rnp_output_destroy", output)
    rnp.call("rnp_ffi_destroy", ffi)
    return {"fingerprint": fingerprint, "public_key": public_key, "subkeys": subkeys}


def load_keyrings(rnp, home):
    ffi = rnp.ffi()
    for name, flags in KEYRINGS:
        keyring = c_void_p()
        rnp.call("rnp_input_from_path", byref(keyring), os.path.join(home, name).encode())
        rnp.call("rnp_load_keys", ffi, b"GPG", keyring, c_uint32(flags))
        rnp.call("rnp_input_destroy", keyring)
    return ffi


def decrypt(rnp, home, path):
    ffi = load_keyrings(rnp, home)
    with open(path, "rb") as f:
        data = f.read()
    source = ctypes.create_string_buffer(data, len(data))
    message = c_void_p()
    rnp.call("rnp_input_from_memory", byref(message), source, c_size_t(len(data)), c_bool(False))
    output = rnp.memory_output()
    op = c_void_p()
    rnp.call("rnp_op_verify_create", byref(op), ffi, message, output)
    result = rnp.raw("rnp_op_verify_execute", op)

    mode, cipher, valid = c_void_p(), c_void_p(), c_bool()
    rnp.call("rnp_op_verify_get_protection_info", op, byref(mode), byref(cipher), byref(valid))
    mode_text = ctypes.string_at(mode.value).decode()
    cipher_text = ctypes.string_at(cipher.value).decode()
    rnp.lib.rnp_buffer_destroy(mode)
    rnp.lib.rnp_buffer_destroy(cipher)

    count = c_size_t()
    rnp.call("rnp_op_verify_get_recipient_count", op, byref(count))
    recipients = []
    for i in range(count.value):
        recipient = c_void_p()
        rnp.call("rnp_op_verify_get_recipient_at", op, c_size_t(i), byref(recipient))
        recipients.append(rnp.string("rnp_recipient_get_keyid", recipient))
    used = c_void_p()
    used_keyid = used_alg = None
    if rnp.raw("rnp_op_verify_get_used_recipient", op, byref(used)) == 0 and used.value:
        used_keyid = rnp.string("rnp_recipient_get_keyid", used)
        used_alg = rnp.string("rnp_recipient_get_alg", used)
    signatures = c_size_t()
    rnp.call("rnp_op_verify_get_signature_count", op, byref(signatures))
    plaintext = rnp.output_bytes(output) if result == 0 else b""

    rnp.call("rnp_op_verify_destroy", op)
    rnp.call("rnp_output_destroy", output)
    rnp.call("rnp_input_destroy", message)
    rnp.call("rnp_ffi_destroy", ffi)
    return {
        "result": result,
        "result_text": rnp.lib.rnp_result_to_string(result).decode(),
        "mode": mode_text,
        "cipher": cipher_text,
        "valid": valid.value,
        "recipients": recipients,
        "used_recipient": used_keyid,
        "used_alg": used_alg,
        "signatures": signatures.value,
        "plaintext_hex": plaintext.hex(),
    }


def main(argv):
    if len(argv) < 3:
        raise RuntimeError(__doc__)
    rnp = Rnp(argv[1])
    command, args = argv[2], argv[3:]
    if command == "version" and not args:
        out = {"version": rnp.lib.rnp_version_string_full().decode()}
    elif command == "generate" and len(args) == 3:
        out = generate(rnp, *args)
    elif command == "decrypt" and len(args) == 2:
        out = decrypt(rnp, *args)
    else:
        raise RuntimeError(__doc__)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except (RuntimeError, OSError) as e:
        print(f"librnp.py: {e}", file=sys.stderr)
        sys.exit(1)
