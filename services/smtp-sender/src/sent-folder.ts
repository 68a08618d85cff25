import type { Inbound } from "@postroom/config";
import type { Credential } from "@postroom/contracts";
import { ImapFlow } from "imapflow";

/** Where and how to put a copy of a sent message. */
export interface SentCopyTarget {
  /** The mailbox's IMAP server (its `inbound` settings; POP3 mailboxes have no folders). */
  server: Pick<Inbound, "host" | "port" | "tls" | "verifyCertificate">;
  /** An IMAP credential from token-service. */
  credential: Credential;
  /** Folder name, e.g. "Sent" or "Sent Items"; created when missing. */
  folder: string;
  /** Deadline for each network step (default 30 s). */
  timeoutMs?: number;
}

/**
 * Appends a sent message to the mailbox's Sent folder, at most once: the folder is searched for
 * the Message-ID first, so a redelivered command (or a retry after a lost APPEND answer) finds the
 * earlier copy. IMAP APPEND takes a literal of known length, so the message is passed whole.
 */
export async function appendToSentFolder(raw: Buffer, rfcMessageId: string, target: SentCopyTarget): Promise<"appended" | "already-there"> {
  const { server, credential, folder } = target;
  const timeout = target.timeoutMs ?? 30_000;
  const client = new ImapFlow({
    host: server.host,
    port: server.port ?? (server.tls === "implicit" ? 993 : 143),
    secure: server.tls === "implicit",
    doSTARTTLS: server.tls === "starttls" ? true : server.tls === "none" ? false : undefined,
    tls: { rejectUnauthorized: server.verifyCertificate },
    auth: credential.mechanism === "PLAIN" ? { user: credential.username, pass: credential.password } : { user: credential.username, accessToken: credential.accessToken },
    logger: false,
    connectionTimeout: timeout,
    greetingTimeout: timeout,
    socketTimeout: timeout * 2,
  });
  await client.connect();
  try {
    const exists = (await client.list()).some((m) => m.path === folder);
    if (!exists) await client.mailboxCreate(folder);
    const lock = await client.getMailboxLock(folder);
    try {
      const found = await client.search({ header: { "message-id": rfcMessageId } }, { uid: true });
      if (found && found.length > 0) return "already-there";
    } finally {
      lock.release();
    }
    await client.append(folder, raw, ["\\Seen"]);
    return "appended";
  } finally {
    await client.logout().catch(() => client.close());
  }
}
