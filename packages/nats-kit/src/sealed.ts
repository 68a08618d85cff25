import nacl from "tweetnacl";
import type { SealedReply } from "@postroom/contracts";

/** A key pair whose secret half never leaves this process. */
export interface ReplyKeys {
  /** Base64 public key, sent with a request as `replyKey`. */
  publicKey: string;
  secretKey: Uint8Array;
}

let processKeys: ReplyKeys | undefined;

/** This process's reply key pair, made on first use and kept only in memory. */
export function replyKeys(): ReplyKeys {
  if (!processKeys) {
    const pair = nacl.box.keyPair();
    processKeys = { publicKey: Buffer.from(pair.publicKey).toString("base64"), secretKey: pair.secretKey };
  }
  return processKeys;
}

/** Thrown when a sealed reply cannot be opened (not for us, or altered on the way). */
export class SealError extends Error {
  override name = "SealError";
}

/**
 * Seals `payload` (JSON) to `replyKey` with a key pair made for this one reply, so the sealer
 * keeps no long-lived key either and two replies share nothing.
 */
export function sealReply(payload: unknown, replyKey: string): SealedReply {
  const recipient = Buffer.from(replyKey, "base64");
  if (recipient.length !== nacl.box.publicKeyLength) throw new SealError("the reply key is not a 32-byte public key");
  const once = nacl.box.keyPair();
  const nonce = nacl.randomBytes(nacl.box.nonceLength);
  const box = nacl.box(Buffer.from(JSON.stringify(payload), "utf8"), nonce, recipient, once.secretKey);
  const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");
  return { version: "v1", sealed: { key: b64(once.publicKey), nonce: b64(nonce), box: b64(box) } };
}

/** Opens a sealed reply with this process's key pair; returns the payload as parsed JSON. */
export function openReply(reply: SealedReply, keys: ReplyKeys = replyKeys()): unknown {
  const b = (s: string) => new Uint8Array(Buffer.from(s, "base64"));
  const opened = nacl.box.open(b(reply.sealed.box), b(reply.sealed.nonce), b(reply.sealed.key), keys.secretKey);
  if (!opened) throw new SealError("the sealed reply could not be opened: it was not sealed to this process, or it was altered");
  return JSON.parse(Buffer.from(opened).toString("utf8"));
}
