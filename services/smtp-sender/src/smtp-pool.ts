import { connect, type Socket } from "node:net";
import type { Readable } from "node:stream";
import type { Smtp } from "@postroom/config";
import type { Credential } from "@postroom/contracts";
import nodemailer, { type Transporter } from "nodemailer";
import type SMTPPool from "nodemailer/lib/smtp-pool/index.js";
import { defaultDeadlines, transportOptions, type SmtpDeadlines } from "./transport.js";

/** Where a pool gets its credential: token-service, asked only when a pool (its connections) is made. */
export type CredentialSource = (tenant: string, mailbox: string, rejected: boolean) => Promise<Credential>;

export interface SmtpPoolsOptions {
  credential: CredentialSource;
  /** SMTP connections per mailbox at most (default 4). */
  connectionsPerMailbox?: number;
  /**
   * Messages one connection carries before it is replaced (default 1000). nodemailer waits 100 ms
   * before it uses the pool again after a connection reached its limit, so the limit is not small.
   */
  messagesPerConnection?: number;
  /** A mailbox's pool unused this long is closed, its connections logged out (default 60 s). */
  idleMs?: number;
  /** An OAuth pool is replaced this long before its token expires (default 60 s). */
  expiryMarginMs?: number;
  deadlines?: SmtpDeadlines;
  now?: () => number;
}

/** What the server said about one message. */
export interface PoolSendResult {
  response: string;
  rejectedErrors: { recipient?: string; response?: string; message: string }[];
}

interface Entry {
  key: string;
  transport: Transporter<SMTPPool.SentMessageInfo>;
  /** When its credential stops being good (OAuth), or Infinity (password). */
  expiresAt: number;
  inflight: number;
  retired: boolean;
  lastUsed: number;
}

/**
 * One pooled SMTP transport per mailbox and credential: up to `connectionsPerMailbox` connections,
 * each logged in once and then carrying message after message, instead of a connection and a
 * login per send.
 *
 * - **TCP_NODELAY**: nodemailer's own sockets never set it, and on a connection that is reused
 *   Nagle's algorithm holds back each small command (MAIL FROM, RCPT TO, the final dot) until the
 *   server's delayed ACK — about 40 ms per message on loopback. The pool is given sockets made
 *   here with `noDelay` (nodemailer's `getSocket` hook), for plain, STARTTLS and implicit TLS alike
 *   (TLS is layered on the same TCP socket).
 * - **Credentials** are asked for when a pool is made, not per message: a pool lives as long as
 *   its credential is good. A 535 / EAUTH retires the pool and the caller asks for a fresh
 *   credential once (`replaceAfterRefusal`); an OAuth token is replaced `expiryMarginMs` before it
 *   expires; an idle pool is closed after `idleMs`, so no secret and no logged-in connection is
 *   kept for a mailbox that sends nothing.
 * - A retired pool finishes the messages it carries, then closes.
 */
export class SmtpPools {
  readonly #entries = new Map<string, Entry>();
  /** Pools being made (credential requested), so concurrent sends share one credential request. */
  readonly #making = new Map<string, Promise<Entry>>();
  readonly #sweep: NodeJS.Timeout;
  readonly #now: () => number;

  constructor(private readonly o: SmtpPoolsOptions) {
    this.#now = o.now ?? Date.now;
    this.#sweep = setInterval(() => this.#closeIdle(), Math.max(1000, (o.idleMs ?? 60_000) / 2));
    this.#sweep.unref();
  }

  /**
   * Sends one message over the mailbox's pool, making the pool (and asking for its credential)
   * when there is none or its credential is about to expire. Errors are nodemailer's (with `code`,
   * `responseCode`, `response`) or the credential source's.
   */
  async send(tenant: string, mailbox: string, smtp: Smtp, envelope: { from: string; to: string[] }, raw: Buffer | Readable): Promise<PoolSendResult> {
    const entry = await this.#current(tenant, mailbox, smtp, false);
    return this.#sendOn(entry, envelope, raw);
  }

  /**
   * After the server refused a login (535 / EAUTH): retires the pool that was refused and sends on a
   * new one made with a fresh credential (`rejected: true` tells token-service to fetch a new one).
   * Concurrent refusals of the same pool share one new pool and one credential request.
   */
  async sendAfterRefusal(tenant: string, mailbox: string, smtp: Smtp, envelope: { from: string; to: string[] }, raw: Buffer | Readable): Promise<PoolSendResult> {
    const entry = await this.#current(tenant, mailbox, smtp, true);
    return this.#sendOn(entry, envelope, raw);
  }

  /** Logs out every connection (after the messages in hand). */
  close(): void {
    clearInterval(this.#sweep);
    for (const e of this.#entries.values()) this.#retire(e);
    this.#entries.clear();
  }

  async #sendOn(entry: Entry, envelope: { from: string; to: string[] }, raw: Buffer | Readable): Promise<PoolSendResult> {
    entry.inflight++;
    entry.lastUsed = this.#now();
    try {
      const info = await entry.transport.sendMail({ envelope, raw });
      return { response: info.response, rejectedErrors: (info as { rejectedErrors?: PoolSendResult["rejectedErrors"] }).rejectedErrors ?? [] };
    } catch (error) {
      const e = error as { code?: string; responseCode?: number };
      // A refused login: nothing more goes out on this pool's credential.
      if (e.code === "EAUTH" || e.responseCode === 535) this.#retire(entry);
      throw error;
    } finally {
      entry.inflight--;
      entry.lastUsed = this.#now();
      if (entry.retired && entry.inflight === 0) entry.transport.close();
    }
  }

  async #current(tenant: string, mailbox: string, smtp: Smtp, refused: boolean): Promise<Entry> {
    // The settings are part of the key: a pool never carries mail to a host it was not made for.
    const key = `${tenant}/${mailbox}|${smtp.host}|${smtp.port ?? ""}|${smtp.tls}|${smtp.verifyCertificate}`;
    const now = this.#now();
    const existing = this.#entries.get(key);
    const margin = this.o.expiryMarginMs ?? 60_000;
    // After a refusal, a pool that is not retired was made after the refused one: use it, do
    // not ask token-service again.
    if (existing && !existing.retired && existing.expiresAt - margin > now) return existing;
    if (existing) {
      this.#retire(existing);
      this.#entries.delete(key);
    }
    let making = this.#making.get(key);
    if (!making) {
      making = (async () => {
        const credential = await this.o.credential(tenant, mailbox, refused);
        const entry: Entry = {
          key,
          transport: nodemailer.createTransport(this.#options(smtp, credential)),
          expiresAt: credential.mechanism === "XOAUTH2" ? Date.parse(credential.expiresAt) : Infinity,
          inflight: 0,
          retired: false,
          lastUsed: this.#now(),
        };
        this.#entries.set(key, entry);
        return entry;
      })().finally(() => this.#making.delete(key));
      this.#making.set(key, making);
    }
    return making;
  }

  #options(smtp: Smtp, credential: Credential): SMTPPool.Options {
    const deadlines = this.o.deadlines ?? defaultDeadlines;
    return {
      ...transportOptions(smtp, credential, deadlines),
      pool: true,
      maxConnections: this.o.connectionsPerMailbox ?? 4,
      maxMessages: this.o.messagesPerConnection ?? 1000,
      // nodemailer would otherwise put a message whose connection closed mid-send back in its
      // queue and send it again by itself — after a cut right behind the final dot, a second
      // copy nobody decided on. The error comes back to the sender's classifier instead, which
      // retries under the command's own bookkeeping (attempts, backoff, the duplicate window).
      ...({ maxRequeues: 0 } as object),
      getSocket: (options, callback) => {
        openSocket(options.host ?? smtp.host, options.port!, deadlines.connectionTimeoutMs).then(
          (connection) => callback(null, { connection }),
          (error: Error) => callback(error, undefined as never),
        );
      },
    };
  }

  #retire(entry: Entry): void {
    if (entry.retired) return;
    entry.retired = true;
    if (this.#entries.get(entry.key) === entry) this.#entries.delete(entry.key);
    if (entry.inflight === 0) entry.transport.close();
  }

  #closeIdle(): void {
    const idleMs = this.o.idleMs ?? 60_000;
    const now = this.#now();
    for (const e of [...this.#entries.values()]) if (e.inflight === 0 && now - e.lastUsed >= idleMs) this.#retire(e);
  }
}

/**
 * A connected TCP socket with Nagle's algorithm off and keep-alive on, within the connection
 * deadline. nodemailer speaks SMTP on it (and upgrades it to TLS for STARTTLS or implicit TLS).
 */
export function openSocket(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, noDelay: true, keepAlive: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error(`connection to ${host}:${port} timed out after ${timeoutMs} ms`), { code: "ETIMEDOUT" }));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeListener("error", onError);
      socket.setNoDelay(true);
      resolve(socket);
    });
    const onError = (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(Object.assign(error, { code: error.code ?? "ECONNECTION" }));
    };
    socket.once("error", onError);
  });
}
