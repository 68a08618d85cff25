import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from "node:crypto";
import type { KV } from "@nats-io/kv";
import { CredentialConfigError } from "./classify.js";

/**
 * Delegated OAuth grants (msal's token cache of one mailbox: its refresh token, account and the
 * current access token), kept in a NATS KV bucket that only token-service may read, sealed with
 * envelope encryption:
 *
 * - every write makes a fresh 256-bit data key and encrypts the grant with it (AES-256-GCM);
 * - the data key is wrapped (AES-256-GCM) with the key-encryption key from the config's
 *   `tokenStore.key` secret reference, which never leaves token-service's memory;
 * - both carry the mailbox (`<tenant>.<mailbox>`) as associated data, so a record copied onto
 *   another mailbox's key does not open.
 *
 * NATS KV rather than PostgreSQL: token-service already holds a NATS connection and nothing else
 * (giving it database credentials would widen what the one secret-holding process can reach), the
 * bucket is replicated like every other bucket (`nats.replicas`) and survives restarts on file
 * storage, each put replaces the record atomically, and the generated NATS permissions give the
 * bucket to token-service alone. History is 1: an overwritten grant is gone from the bucket.
 *
 * Key rotation: put the new key in `tokenStore.key` and the old one in `tokenStore.previousKeys`,
 * restart token-service (it re-seals every grant it serves with the new key at start, see
 * `rewrapAll`), then remove the old key. A record names its key by a fingerprint, never the key.
 */

/** A sealed grant as stored (all binary fields base64). */
interface SealedGrant {
  version: "v1";
  /** Fingerprint of the key-encryption key that wrapped `dek`. */
  kek: string;
  /** The data key, wrapped: iv (12) + tag (16) + ciphertext (32). */
  dek: string;
  /** The grant: iv (12) + tag (16) + ciphertext. */
  data: string;
  sealedAt: string;
}

/** A key-encryption key and its fingerprint. */
export interface GrantKey {
  fingerprint: string;
  key: Buffer;
}

/**
 * Turns the configured secret into a 256-bit key. Any string of at least 32 characters is taken
 * (HKDF-SHA256 stretches it, so a base64 or hex rendering of 32 random bytes works as written);
 * shorter ones are refused, because a short passphrase is guessable offline from a stolen bucket.
 */
export function grantKey(secret: string): GrantKey {
  if (secret.trim().length < 32) {
    throw new CredentialConfigError("tokenStore.key is shorter than 32 characters", "set it to 32 random bytes, e.g. openssl rand -base64 32", "token-store-key");
  }
  const key = Buffer.from(hkdfSync("sha256", Buffer.from(secret.trim(), "utf8"), Buffer.alloc(0), "postroom oauth grants v1", 32));
  return { key, fingerprint: createHash("sha256").update("postroom-kek\0").update(key).digest("hex").slice(0, 16) };
}

function gcmSeal(key: Buffer, plaintext: Buffer, aad: Buffer): Buffer {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(aad);
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), ct]);
}

function gcmOpen(key: Buffer, sealed: Buffer, aad: Buffer): Buffer {
  const decipher = createDecipheriv("aes-256-gcm", key, sealed.subarray(0, 12));
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.subarray(12, 28));
  return Buffer.concat([decipher.update(sealed.subarray(28)), decipher.final()]);
}

/** Seals a grant for one mailbox key with the active key-encryption key. */
export function sealGrant(plaintext: string, kek: GrantKey, mailboxKey: string): string {
  const aad = Buffer.from(`postroom-grant\0${mailboxKey}`);
  const dek = randomBytes(32);
  const record: SealedGrant = {
    version: "v1",
    kek: kek.fingerprint,
    dek: gcmSeal(kek.key, dek, aad).toString("base64"),
    data: gcmSeal(dek, Buffer.from(plaintext, "utf8"), aad).toString("base64"),
    sealedAt: new Date().toISOString(),
  };
  dek.fill(0);
  return JSON.stringify(record);
}

/** Opens a sealed grant; says which key it needs when none of `keys` is it. */
export function openGrant(text: string, keys: GrantKey[], mailboxKey: string): { plaintext: string; kek: string } {
  let record: SealedGrant;
  try {
    record = JSON.parse(text) as SealedGrant;
  } catch (cause) {
    throw new CredentialConfigError("the stored grant is not a sealed record", "sign in again (postroom auth sign-in)", "grant-unreadable", { cause });
  }
  const kek = keys.find((k) => k.fingerprint === record.kek);
  if (kek === undefined) {
    throw new CredentialConfigError(
      `the stored grant was sealed with a key that is not configured (fingerprint ${record.kek})`,
      "add the key it was sealed with to tokenStore.previousKeys, or sign in again (postroom auth sign-in)",
      "grant-key-missing",
    );
  }
  const aad = Buffer.from(`postroom-grant\0${mailboxKey}`);
  try {
    const dek = gcmOpen(kek.key, Buffer.from(record.dek, "base64"), aad);
    const plaintext = gcmOpen(dek, Buffer.from(record.data, "base64"), aad).toString("utf8");
    dek.fill(0);
    return { plaintext, kek: record.kek };
  } catch (cause) {
    throw new CredentialConfigError("the stored grant does not open (tampered with, or stored under another mailbox)", "sign in again (postroom auth sign-in)", "grant-unreadable", { cause });
  }
}

/** The grants of every mailbox, sealed in one KV bucket. */
export class GrantStore {
  constructor(
    private readonly kv: KV,
    /** The active key first, then keys being rotated out. */
    private readonly keys: GrantKey[],
  ) {
    if (keys.length === 0) throw new Error("GrantStore needs at least one key");
  }

  /** The grant of one mailbox (`<tenant>.<mailbox>`), or undefined when none is stored. */
  async load(mailboxKey: string): Promise<string | undefined> {
    const entry = await this.kv.get(mailboxKey);
    if (!entry || entry.value.length === 0 || entry.operation !== "PUT") return undefined;
    return openGrant(entry.string(), this.keys, mailboxKey).plaintext;
  }

  /**
   * Replaces the mailbox's grant in one put: the new record is complete in the bucket before the
   * old one is gone (there is never a moment without a usable grant).
   */
  async save(mailboxKey: string, plaintext: string): Promise<void> {
    await this.kv.put(mailboxKey, sealGrant(plaintext, this.keys[0]!, mailboxKey));
  }

  async remove(mailboxKey: string): Promise<void> {
    await this.kv.delete(mailboxKey);
  }

  /** Re-seals with the active key every listed grant sealed with an older one; returns how many. */
  async rewrapAll(mailboxKeys: string[]): Promise<number> {
    let n = 0;
    for (const key of mailboxKeys) {
      const entry = await this.kv.get(key);
      if (!entry || entry.value.length === 0 || entry.operation !== "PUT") continue;
      const { plaintext, kek } = openGrant(entry.string(), this.keys, key);
      if (kek === this.keys[0]!.fingerprint) continue;
      // Compare-and-set on the revision: a refresh that rotated the grant meanwhile wins.
      await this.kv.update(key, sealGrant(plaintext, this.keys[0]!, key), entry.revision).then(
        () => n++,
        () => undefined,
      );
    }
    return n;
  }
}
