import { SMTPServer, type SMTPServerAddress, type SMTPServerSession } from "smtp-server";
import { freePort, type TestServer, waitFor } from "@postroom/mail-servers";

/** An SMTP login the sink accepts. */
export interface SmtpUser {
  /** AUTH user name. */
  username: string;
  /** AUTH password. */
  password: string;
}

/** The SMTP command a scripted reply answers. */
export type SmtpStage = "mail" | "rcpt" | "data";

/** A reply to give instead of the default acceptance. */
export interface SmtpReply {
  /** SMTP reply code: 2xx accepts, 4xx is a temporary failure, 5xx a permanent one. */
  code: number;
  /** Reply text (default: a generic text for the code). */
  message?: string;
}

/** What a reply hook sees. */
export interface SmtpReplyContext {
  /** The command being answered. */
  stage: SmtpStage;
  /** The address of MAIL FROM or RCPT TO (for "data": the envelope sender). */
  address: string;
  /** The envelope so far. */
  envelope: SmtpEnvelope;
  /** The authenticated user, if any. */
  user: string | undefined;
  /** 1 for the first time this stage is reached since start, 2 for the next, ... */
  attempt: number;
  /** For "data": the message bytes. */
  raw?: Buffer;
}

/** Decides a reply; `undefined` means "accept as usual". */
export type SmtpReplyHook = (context: SmtpReplyContext) => SmtpReply | number | undefined;

/** Envelope addresses of one SMTP transaction. */
export interface SmtpEnvelope {
  /** MAIL FROM address ("" for the null sender). */
  mailFrom: string;
  /** RCPT TO addresses accepted so far. */
  rcptTo: string[];
}

/** A message the sink accepted. */
export interface SmtpMessage {
  /** Envelope of the transaction. */
  envelope: SmtpEnvelope;
  /** The message exactly as received after DATA (dot-unstuffed, CRLF line ends). */
  raw: Buffer;
  /** The AUTH user, if the client logged in. */
  user: string | undefined;
  /** When the final "250" was sent. */
  receivedAt: Date;
}

/** One answered MAIL/RCPT/DATA command, accepted or not: for asserting retries. */
export interface SmtpAttempt {
  /** The command. */
  stage: SmtpStage;
  /** The code answered (250 when accepted). */
  code: number;
  /** MAIL FROM / RCPT TO address, or the sender for DATA. */
  address: string;
}

/** Options for {@link startSmtpSink}. */
export interface SmtpSinkOptions {
  /** Logins accepted with AUTH PLAIN/LOGIN. Without users, AUTH is not offered. */
  users?: SmtpUser[];
  /** Refuse MAIL FROM before AUTH (default: true when `users` is given). */
  authRequired?: boolean;
  /** Offer STARTTLS with smtp-server's built-in self-signed certificate (default false). */
  starttls?: boolean;
  /** Largest message accepted, advertised as SIZE (default 25 MiB). */
  maxSize?: number;
  /** Decide replies yourself; runs after the queued replies of {@link SmtpSink.replyWith}. */
  onReply?: SmtpReplyHook;
}

/** How to reach the sink. */
export interface SmtpSinkInfo {
  /** Always 127.0.0.1. */
  host: string;
  /** Plain SMTP port (STARTTLS when enabled). */
  port: number;
}

const DEFAULT_TEXT: Record<number, string> = {
  421: "Service not available, closing transmission channel",
  450: "Requested mail action not taken: mailbox unavailable",
  451: "Requested action aborted: local error in processing",
  452: "Requested action not taken: insufficient system storage",
  550: "Requested action not taken: mailbox unavailable",
  552: "Requested mail action aborted: exceeded storage allocation",
  553: "Requested action not taken: mailbox name not allowed",
  554: "Transaction failed",
};

/** Error object smtp-server turns into the reply `code message`. */
function replyError(reply: SmtpReply): Error & { responseCode: number } {
  const error = new Error(reply.message ?? DEFAULT_TEXT[reply.code] ?? "Scripted reply") as Error & { responseCode: number };
  error.responseCode = reply.code;
  return error;
}

function addressOf(address: SMTPServerAddress | false): string {
  return address === false ? "" : address.address;
}

/**
 * A real SMTP server (the `smtp-server` package) on a free loopback port that keeps every accepted
 * message in memory, and can be told to answer with given reply codes to exercise retry logic.
 *
 * This is the "Exchange Online SMTP" stand-in for unit and service tests. Delivery through a real
 * MTA (Postfix → LMTP → Dovecot) is the separate `startPostfix` fixture (postfix.ts), which
 * implements the same {@link TestServer} interface.
 */
export class SmtpSink implements TestServer<SmtpSinkInfo> {
  readonly name = "smtp-sink";
  /** Every accepted message, in order. */
  readonly messages: SmtpMessage[] = [];
  /** Every answered MAIL/RCPT/DATA, accepted or refused, in order. */
  readonly attempts: SmtpAttempt[] = [];
  /** Every AUTH attempt: the user name and the code answered (235 accepted). */
  readonly authAttempts: { username: string; code: number }[] = [];
  /** Replies for the next AUTH attempts (see {@link SmtpSink.refuseAuth}). */
  private readonly queuedAuth: SmtpReply[] = [];
  private authRefusal: SmtpReply | undefined;
  private readonly options: SmtpSinkOptions;
  private readonly queued: Record<SmtpStage, SmtpReply[]> = { mail: [], rcpt: [], data: [] };
  private readonly counts: Record<SmtpStage, number> = { mail: 0, rcpt: 0, data: 0 };
  private server: SMTPServer | undefined;
  private current: SmtpSinkInfo | undefined;

  constructor(options: SmtpSinkOptions = {}) {
    this.options = options;
  }

  /** Connection info; throws before `start()`. */
  get info(): SmtpSinkInfo {
    if (this.current === undefined) throw new Error("SMTP sink is not started");
    return this.current;
  }

  async start(): Promise<SmtpSinkInfo> {
    if (this.current !== undefined) return this.current;
    const users = this.options.users ?? [];
    const withAuth = users.length > 0;
    const disabled = [...(withAuth ? [] : ["AUTH"]), ...(this.options.starttls === true ? [] : ["STARTTLS"])];
    const server = new SMTPServer({
      name: "smtp-sink.postroom.test",
      banner: "postroom test SMTP sink",
      size: this.options.maxSize ?? 25 * 1024 * 1024,
      authMethods: ["PLAIN", "LOGIN"],
      authOptional: !(this.options.authRequired ?? withAuth),
      allowInsecureAuth: true,
      disabledCommands: disabled,
      logger: false,
      // stop() waits for connected clients to quit; one stuck mid-transaction is cut after 1 s
      // instead of smtp-server's default 30 s, so a failing test does not also hang.
      closeTimeout: 1_000,
      onAuth: (auth, _session, callback) => {
        // A scripted refusal first (Exchange's "535 5.7.139 ... SmtpClientAuthentication is
        // disabled"), whatever the password.
        const scripted = this.queuedAuth.shift() ?? this.authRefusal;
        if (scripted !== undefined && scripted.code >= 300) {
          this.authAttempts.push({ username: auth.username ?? "", code: scripted.code });
          callback(replyError(scripted));
          return;
        }
        const ok = users.some((u) => u.username === auth.username && u.password === auth.password);
        this.authAttempts.push({ username: auth.username ?? "", code: ok ? 235 : 535 });
        if (!ok) {
          const error = new Error("5.7.8 Authentication unsuccessful") as Error & { responseCode: number };
          error.responseCode = 535;
          callback(error);
          return;
        }
        callback(null, { user: auth.username });
      },
      onMailFrom: (address, session, callback) => {
        callback(this.decide("mail", address.address, session) ?? null);
      },
      onRcptTo: (address, session, callback) => {
        callback(this.decide("rcpt", address.address, session) ?? null);
      },
      onData: (stream, session, callback) => {
        const chunks: Buffer[] = [];
        stream.on("data", (chunk: Buffer) => chunks.push(chunk));
        stream.on("error", (error) => callback(error));
        stream.on("end", () => {
          const raw = Buffer.concat(chunks);
          // smtp-server sets sizeExceeded when the client sent more than SIZE allows.
          if (stream.sizeExceeded) {
            const error = replyError({ code: 552, message: "5.3.4 Message size exceeds fixed limit" });
            this.attempts.push({ stage: "data", code: 552, address: addressOf(session.envelope.mailFrom) });
            callback(error);
            return;
          }
          const refusal = this.decide("data", addressOf(session.envelope.mailFrom), session, raw);
          if (refusal !== undefined) {
            callback(refusal);
            return;
          }
          this.messages.push({
            envelope: this.envelopeOf(session),
            raw,
            user: typeof session.user === "string" ? session.user : undefined,
            receivedAt: new Date(),
          });
          callback(null, "2.0.0 Queued");
        });
      },
    });
    // smtp-server emits "error" for client-side socket errors too; a test should not crash on them.
    server.on("error", () => undefined);
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      try {
        await new Promise<void>((resolve, reject) => {
          server.server.once("error", reject);
          server.listen(port, "127.0.0.1", () => {
            server.server.off("error", reject);
            resolve();
          });
        });
        this.server = server;
        this.current = { host: "127.0.0.1", port };
        return this.current;
      } catch (error) {
        if (attempt >= 3 || (error as NodeJS.ErrnoException).code !== "EADDRINUSE") throw error;
      }
    }
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.current = undefined;
    if (server === undefined) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /**
   * Queues replies for the next commands of a stage, used once each in order, then the sink accepts
   * again. `replyWith("data", 451, 451)` makes the first two DATA attempts fail temporarily;
   * `replyWith("rcpt", { code: 550, message: "5.1.1 User unknown" })` refuses one recipient.
   * A code below 300 in the queue means "accept this one".
   */
  replyWith(stage: SmtpStage, ...replies: Array<SmtpReply | number>): void {
    this.queued[stage].push(...replies.map((r) => (typeof r === "number" ? { code: r } : r)));
  }

  /**
   * Refuses AUTH: with `once` replies, the next attempts one each; with `{ always: reply }`, every
   * attempt until `refuseAuth()` with no arguments lifts it (the administrator fixed the mailbox).
   * `refuseAuth({ code: 535, message: "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox." })`
   */
  refuseAuth(...replies: Array<SmtpReply | { always: SmtpReply }>): void {
    if (replies.length === 0) {
      this.authRefusal = undefined;
      this.queuedAuth.length = 0;
      return;
    }
    for (const r of replies) {
      if ("always" in r) this.authRefusal = r.always;
      else this.queuedAuth.push(r);
    }
  }

  /** Forgets recorded messages, attempts and queued replies. */
  reset(): void {
    this.messages.length = 0;
    this.attempts.length = 0;
    this.authAttempts.length = 0;
    this.queuedAuth.length = 0;
    this.authRefusal = undefined;
    for (const stage of ["mail", "rcpt", "data"] as const) {
      this.queued[stage].length = 0;
      this.counts[stage] = 0;
    }
  }

  /** Resolves with the first `count` accepted messages once that many have arrived. */
  async waitForMessages(count: number, timeoutMs = 10_000): Promise<SmtpMessage[]> {
    await waitFor(() => this.messages.length >= count, {
      timeoutMs,
      intervalMs: 20,
      what: `${count} message(s) in the SMTP sink (have ${this.messages.length})`,
    });
    return this.messages.slice(0, count);
  }

  private envelopeOf(session: SMTPServerSession): SmtpEnvelope {
    return {
      mailFrom: addressOf(session.envelope.mailFrom),
      rcptTo: session.envelope.rcptTo.map((r) => r.address),
    };
  }

  private decide(stage: SmtpStage, address: string, session: SMTPServerSession, raw?: Buffer): Error | undefined {
    this.counts[stage] += 1;
    let reply: SmtpReply | undefined = this.queued[stage].shift();
    if (reply === undefined && this.options.onReply !== undefined) {
      const hook = this.options.onReply({
        stage,
        address,
        envelope: this.envelopeOf(session),
        user: typeof session.user === "string" ? session.user : undefined,
        attempt: this.counts[stage],
        ...(raw === undefined ? {} : { raw }),
      });
      reply = typeof hook === "number" ? { code: hook } : hook;
    }
    const code = reply === undefined || reply.code < 300 ? 250 : reply.code;
    this.attempts.push({ stage, code, address });
    return code === 250 || reply === undefined ? undefined : replyError(reply);
  }
}

/** Starts an {@link SmtpSink} on a free loopback port; `stop()` it when done. */
export async function startSmtpSink(options: SmtpSinkOptions = {}): Promise<SmtpSink> {
  const sink = new SmtpSink(options);
  await sink.start();
  return sink;
}
