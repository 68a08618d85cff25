import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";
import { decodeFrame, encodeFrame, frameBytes, FrameReader, hasFlag, param, SDMP_MESSAGES, type Frame, type MessageSpec, type SdmpEncoding } from "./codec.js";
import { Transcript } from "./transcript.js";

/** What the adapter needs to know to offer one email as an SDMP session. */
export interface SoftdialOffer {
  /** Postroom's session id: globally unique, used as SI (1–120 chars). */
  sessionId: string;
  /** The mailbox id: offers of one mailbox share its pause between new sessions. */
  mailbox?: string;
  /** Sender address (TN); empty when the email had no From (a placeholder is sent). */
  from: string;
  /** The mailbox address (DN): CallGem routes on it. */
  to: string;
  /** Reference to the archived email and a short summary (DT); the body stays in the archive. */
  reference: string;
  /** Further IC parameters a site's controller expects (they must be in the message table). */
  extra?: Record<string, string>;
}

/** Why Postroom answered a CT with TS RS2 (a bounded set: it becomes a metric label). */
export type RefusalReason = "unknown-agent" | "agent-busy" | "held-by-another-agent" | "queue-timed-out" | "delivery-error";

export type SoftdialEvent =
  | { type: "campaign"; sessionId: string; campaign: string }
  | { type: "offered"; sessionId: string; connection: number; reoffer: boolean; held: boolean }
  | { type: "queued"; sessionId: string; queue: string; timeoutSeconds: number | null }
  | { type: "queue-timeout"; sessionId: string; queue: string }
  | { type: "assigned"; sessionId: string; agent: string; endpoint: string }
  | { type: "delivered"; sessionId: string; agent: string }
  | { type: "delivery-failed"; sessionId: string; agent: string; reason: RefusalReason; message: string }
  | { type: "completed"; sessionId: string; agent: string | null; outcome: string }
  | { type: "unanswered"; sessionId: string; reason: "queue-timeout" | "abandoned" | "disconnected" }
  | { type: "rejected"; sessionId: string | null; code: string; message: string; frame: string }
  | { type: "unacknowledged"; code: string; token: string; sessionId: string | null; seconds: number }
  | { type: "connected"; connection: number; toReoffer: number; held: number }
  | { type: "resynced"; connection: number; reoffered: number; held: number }
  | { type: "disconnected"; connection: number; reason: string }
  | { type: "connect-failed"; attempt: number; reason: string; retryInMs: number };

/** The answer of `deliver`: true, or why the agent cannot have the email. false means unknown agent. */
export type DeliveryResult = boolean | { refused: RefusalReason; message: string };

export interface SoftdialAdapterOptions {
  host: string;
  port: number;
  /** Our switch id, declared with TO and sent as IC on each IC. */
  switchId: string;
  /** The port's encoding: ascii (6502, default) or utf16le (6500). */
  encoding?: SdmpEncoding;
  /** Channels declared with TO (NT). */
  channels?: number;
  /** VS interval; CallGem then sends DA this often. A connection silent for 3 intervals is dropped. */
  heartbeatSeconds?: number;
  /** Folder for per-connection transcripts; none when unset. */
  transcriptDir?: string;
  transcriptPrefix?: string;
  /** Hands the session to the agent CallGem chose (TS RS0), or says why not (TS RS2). */
  deliver: (sessionId: string, agent: string) => Promise<DeliveryResult>;
  onEvent?: (e: SoftdialEvent) => void;
  /**
   * Paces ICs sent after a (re)connect: called once per IC, it must call `send` when the
   * mailbox's pause allows (the bridge shares one pacer between new and re-offered sessions).
   * Without it they go out at once.
   */
  pace?: (offer: SoftdialOffer, send: () => void) => Promise<void>;
  /** Reconnect backoff bounds. */
  backoff?: { initialMs: number; maxMs: number; stableMs: number };
  /** The message table; extend it when a controller shows more. */
  messages?: Record<string, MessageSpec>;
  /** ND cause per outcome (the agent's, or `disconnected-by-acd` / `abandoned`); `other` for the rest. */
  causes?: Record<string, number>;
  /** A TK frame not acknowledged with MV within this time is reported. Default 10 s. */
  ackTimeoutMs?: number;
}

/** ND causes when the configuration names none (documented in the README and the config schema). */
export const DEFAULT_CAUSES: Readonly<Record<string, number>> = {
  answered: 1,
  forwarded: 2,
  transferred: 3,
  "no-reply-needed": 4,
  spam: 5,
  closed: 6,
  other: 9,
  "disconnected-by-acd": 0,
  abandoned: 0,
};

type Status = "pending" | "offered" | "queued" | "assigned" | "delivered" | "ended";

interface Tracked {
  offer: SoftdialOffer;
  status: Status;
  /** The connection on which CallGem knows this session (its IC was written there); 0: none. */
  knownOn: number;
  /** The agent who has the email in Postroom (delivered), whatever CallGem's view is. */
  holder: string | null;
  /** The connection whose CT bound the holder's station, so SD is valid there; 0: none. */
  stationOn: number;
  campaign: string | null;
  queue: string | null;
  agent: string | null;
  endpoint: string | null;
  timer: NodeJS.Timeout | undefined;
  /** The queue timer ran out while an agent was being tried: QT is due once the try fails. */
  queueExpired: boolean;
  /** QT was sent for the current queue: a CD now means no agent took it in time. */
  timedOut: boolean;
  /** An IC was written for this session before (a later one is a re-offer). */
  offeredBefore: boolean;
  /** The delivery to an agent in flight, if any. */
  delivering: Promise<void> | undefined;
}

interface PendingAck {
  code: string;
  sessionId: string | null;
  sentAt: number;
  connection: number;
}

/**
 * Postroom as the media layer of Softdial CallGem over SDMP (TCP; 6502 ASCII or 6500 UTF-16LE).
 * Declares itself with TO, offers each session with IC, follows CA / TQ / CT / CD, runs the queue
 * timer and reports QT, answers TS once the agent has the email, ends with ND and frees the
 * endpoint with SD. Every frame but VS carries a unique TK, matched against CallGem's MV.
 *
 * CallGem drops every session and station of a socket that closes, so a reconnect is a full
 * resynchronisation (see the README's "Softdial session states"): VS, TO, then each session not
 * ended is offered again with its own SI — one an agent already has with HE naming her, and any
 * CT of it to someone else, or of another session to her while she works on it, is refused.
 */
export class SoftdialAdapter {
  readonly #sessions = new Map<string, Tracked>();
  #socket: Socket | undefined;
  #connected = false;
  #stopped = true;
  #connection = 0;
  #attempt = 0;
  #transcript: Transcript | undefined;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #watchdog: NodeJS.Timeout | undefined;
  #stableTimer: NodeJS.Timeout | undefined;
  #ackSweep: NodeJS.Timeout | undefined;
  #lastHeard = 0;
  #token = 0;
  /** Per adapter instance, so tokens stay unique across restarts of the process. */
  readonly #tokenPrefix = randomBytes(4).toString("hex");
  readonly #pendingAcks = new Map<string, PendingAck>();
  readonly #messages: Record<string, MessageSpec>;
  readonly #encoding: SdmpEncoding;
  /** Counters for the metrics work: frames and connection changes. */
  readonly stats = { framesSent: 0, framesReceived: 0, errorsReceived: 0, reconnects: 0, reoffered: 0, acknowledged: 0, unacknowledged: 0, refusals: 0 };

  constructor(private readonly o: SoftdialAdapterOptions) {
    this.#messages = o.messages ?? SDMP_MESSAGES;
    this.#encoding = o.encoding ?? "ascii";
  }

  start(): void {
    this.#stopped = false;
    this.#connect();
  }

  /** Closes the socket; CallGem then discards our sessions, which is what a restart re-offers. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#reconnectTimer);
    clearInterval(this.#watchdog);
    clearTimeout(this.#stableTimer);
    clearInterval(this.#ackSweep);
    for (const s of this.#sessions.values()) clearTimeout(s.timer);
    const socket = this.#socket;
    if (socket && !socket.destroyed) await new Promise<void>((r) => socket.end(() => r()));
    socket?.destroy();
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** TK frames sent and not yet acknowledged. */
  get unacknowledged(): number {
    return this.#pendingAcks.size;
  }

  /**
   * Offers a session now if connected, else as soon as the connection is up. Idempotent per SI.
   * `offeredBefore`: CallGem had it on an earlier socket (a restart restoring it), so its next IC
   * is a re-offer.
   */
  offer(o: SoftdialOffer, options: { offeredBefore?: boolean } = {}): void {
    if (this.#sessions.has(o.sessionId)) return;
    const t = this.#track(o);
    t.offeredBefore = options.offeredBefore ?? false;
    if (this.#connected) this.#sendIc(t, this.#connection);
  }

  /**
   * A session an agent already has (restored from PostgreSQL after a restart): CallGem does not
   * know it any more; the next connection re-offers it with HE naming her, so the views agree.
   */
  restoreDelivered(o: SoftdialOffer, agent: string): void {
    if (this.#sessions.has(o.sessionId)) return;
    const t = this.#track(o);
    t.status = "delivered";
    t.holder = agent;
    t.offeredBefore = true;
  }

  /** The agent closed the session in Postroom: tell CallGem (ND, then SD) if it knows the session. */
  close(sessionId: string, outcome: string): void {
    const t = this.#sessions.get(sessionId);
    if (!t || t.status === "ended") return;
    this.#end(t, this.#causeOf(outcome), outcome);
  }

  /** Whether the adapter tracks this session (it is not ended). */
  has(sessionId: string): boolean {
    return this.#sessions.has(sessionId);
  }

  /** Sessions not yet in an agent's hands (what a reconnect offers again). */
  undelivered(): string[] {
    return [...this.#sessions.values()].filter((t) => t.status !== "delivered" && t.status !== "ended").map((t) => t.offer.sessionId);
  }

  #track(o: SoftdialOffer): Tracked {
    const t: Tracked = {
      offer: o,
      status: "pending",
      knownOn: 0,
      holder: null,
      stationOn: 0,
      campaign: null,
      queue: null,
      agent: null,
      endpoint: null,
      timer: undefined,
      queueExpired: false,
      timedOut: false,
      offeredBefore: false,
      delivering: undefined,
    };
    this.#sessions.set(o.sessionId, t);
    return t;
  }

  #causeOf(outcome: string): number {
    const causes = { ...DEFAULT_CAUSES, ...(this.o.causes ?? {}) };
    return causes[outcome] ?? causes.other ?? 9;
  }

  #connect(): void {
    if (this.#stopped) return;
    const n = ++this.#connection;
    if (this.o.transcriptDir) this.#transcript = new Transcript({ dir: this.o.transcriptDir, prefix: this.o.transcriptPrefix ?? `softdial-${this.o.switchId}` }, n);
    this.#transcript?.write("note", `connecting to ${this.o.host}:${this.o.port} (${this.#encoding})`);
    const socket = connect({ host: this.o.host, port: this.o.port });
    this.#socket = socket;
    socket.setNoDelay(true);
    const reader = new FrameReader(this.#encoding);
    const connectDeadline = setTimeout(() => socket.destroy(new Error("connect timed out")), 10_000);
    socket.once("connect", () => {
      clearTimeout(connectDeadline);
      this.#onConnected(n);
    });
    socket.on("data", (chunk: Buffer) => {
      this.#lastHeard = Date.now();
      for (const text of reader.push(chunk)) this.#onFrame(text, n);
    });
    let lastError = "socket closed";
    socket.on("error", (e) => {
      lastError = e.message;
      this.#transcript?.write("note", `socket error: ${e.message}`);
    });
    socket.once("close", () => {
      clearTimeout(connectDeadline);
      this.#onClosed(n, lastError);
    });
  }

  #onConnected(n: number): void {
    this.#connected = true;
    this.#lastHeard = Date.now();
    const hb = this.o.heartbeatSeconds ?? 30;
    this.#send({ code: "VS", params: [["VI", String(hb)]] });
    this.#send({ code: "TO", params: [["IC", this.o.switchId], ["NT", String(this.o.channels ?? 100)], ["ND", true], ["SD", true], ["TS", true]] });
    clearInterval(this.#watchdog);
    if (hb > 0) {
      this.#watchdog = setInterval(() => {
        if (Date.now() - this.#lastHeard > 3 * hb * 1000) this.#socket?.destroy(new Error("no DA from the controller for three heartbeat intervals"));
      }, Math.min(hb * 1000, 5_000));
    }
    const ackMs = this.o.ackTimeoutMs ?? 10_000;
    clearInterval(this.#ackSweep);
    this.#ackSweep = setInterval(() => this.#sweepAcks(ackMs), Math.max(50, Math.min(1000, ackMs / 4)));
    // The backoff starts over only once this connection has proven stable.
    clearTimeout(this.#stableTimer);
    this.#stableTimer = setTimeout(() => (this.#attempt = 0), this.o.backoff?.stableMs ?? 30_000);
    void this.#resync(n);
  }

  /**
   * Brings CallGem's view back in line with ours on a fresh connection: sessions agents hold
   * first (so their stations are claimed before CallGem hands them another), then the others in
   * the order they arrived, each through the pacer like a new session.
   */
  async #resync(n: number): Promise<void> {
    // A delivery in flight decides whether its session is held or waiting.
    await Promise.all([...this.#sessions.values()].map((t) => t.delivering));
    if (n !== this.#connection || !this.#connected) return;
    const all = [...this.#sessions.values()].filter((t) => t.status !== "ended" && t.knownOn !== n);
    const held = all.filter((t) => t.status === "delivered");
    const waiting = all.filter((t) => t.status !== "delivered");
    this.o.onEvent?.({ type: "connected", connection: n, toReoffer: waiting.filter((t) => t.offeredBefore).length, held: held.length });
    let reoffered = 0;
    let heldSent = 0;
    // One line per mailbox: each waits for its own pause, none holds up another mailbox.
    const lines = new Map<string, Tracked[]>();
    for (const t of [...held, ...waiting]) lines.set(t.offer.mailbox ?? "", [...(lines.get(t.offer.mailbox ?? "") ?? []), t]);
    await Promise.all(
      [...lines.values()].map(async (line) => {
        for (const t of line) {
          const send = (): void => {
            if (n !== this.#connection || !this.#connected || t.status === "ended" || t.knownOn === n) return;
            const before = t.offeredBefore;
            if (this.#sendIc(t, n)) {
              if (t.status === "delivered") heldSent++;
              else if (before) reoffered++;
            }
          };
          if (this.o.pace) await this.o.pace(t.offer, send);
          else send();
          if (n !== this.#connection || !this.#connected) return;
        }
      }),
    );
    if (n !== this.#connection || !this.#connected) return;
    this.stats.reoffered += reoffered;
    this.o.onEvent?.({ type: "resynced", connection: n, reoffered, held: heldSent });
  }

  #onClosed(n: number, reason: string): void {
    const was = this.#connected;
    this.#connected = false;
    clearInterval(this.#watchdog);
    clearTimeout(this.#stableTimer);
    clearInterval(this.#ackSweep);
    // Frames of a closed socket will never be acknowledged; what they said is resent on resync.
    for (const [k, p] of this.#pendingAcks) if (p.connection === n) this.#pendingAcks.delete(k);
    this.#transcript?.write("note", "connection closed");
    // CallGem discarded our sessions and the stations they held with the socket.
    for (const t of this.#sessions.values()) {
      clearTimeout(t.timer);
      t.timer = undefined;
      t.queueExpired = false;
      t.timedOut = false;
      if (t.status !== "delivered" && t.status !== "ended" && t.status !== "assigned") t.status = "pending";
    }
    if (was) this.o.onEvent?.({ type: "disconnected", connection: n, reason });
    if (this.#stopped) return;
    const b = this.o.backoff ?? { initialMs: 500, maxMs: 30_000, stableMs: 30_000 };
    const base = Math.min(b.maxMs, b.initialMs * 2 ** this.#attempt++);
    const delay = base / 2 + Math.random() * (base / 2);
    this.stats.reconnects++;
    if (!was) this.o.onEvent?.({ type: "connect-failed", attempt: this.#attempt, reason, retryInMs: Math.round(delay) });
    this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
  }

  /** Writes the IC of a session on connection n; false if it could not be built or written. */
  #sendIc(t: Tracked, n: number): boolean {
    const held = t.status === "delivered";
    if (!held) {
      t.status = "offered";
      t.agent = null;
      t.endpoint = null;
    }
    t.campaign = null;
    t.queue = null;
    t.queueExpired = false;
    t.timedOut = false;
    const from = t.offer.from.trim() || NO_SENDER;
    let written: boolean;
    try {
      written = this.#send({
        code: "IC",
        params: [
          ["TD", "default"],
          ["CN", "system"],
          ["IC", this.o.switchId],
          ["SI", t.offer.sessionId],
          ["TI", tiOf(t.offer.sessionId)],
          ["TN", from],
          ["DN", t.offer.to],
          ["MT", "email"],
          ["DT", t.offer.reference],
          ...(held && t.holder ? ([["HE", t.holder]] as [string, string][]) : []),
          ...Object.entries(t.offer.extra ?? {}),
        ],
        token: true,
        sessionId: t.offer.sessionId,
      });
    } catch (error) {
      // A frame we cannot build would be rejected by CallGem as well: report it, do not retry.
      this.#sessions.delete(t.offer.sessionId);
      this.o.onEvent?.({ type: "rejected", sessionId: t.offer.sessionId, code: "local", message: (error as Error).message, frame: "IC" });
      return false;
    }
    if (!written) {
      if (!held) t.status = "pending";
      return false;
    }
    t.knownOn = n;
    const reoffer = t.offeredBefore;
    t.offeredBefore = true;
    this.o.onEvent?.({ type: "offered", sessionId: t.offer.sessionId, connection: n, reoffer, held });
    return true;
  }

  /**
   * Encodes, records and writes one frame on the live socket; false when there is none (then
   * nothing was sent and nothing is recorded as sent). Every frame but VS carries a fresh TK.
   */
  #send(frame: Frame & { token?: boolean; sessionId?: string | null }): boolean {
    const socket = this.#socket;
    if (!this.#connected || !socket || socket.destroyed || !socket.writable) return false;
    const params = [...frame.params];
    let token: string | undefined;
    if (frame.token !== false && this.#messages[frame.code]?.params.includes("TK")) {
      token = `${this.#tokenPrefix}-${this.#connection}-${++this.#token}`;
      params.push(["TK", token]);
    }
    const text = encodeFrame({ code: frame.code, params }, { encoding: this.#encoding, messages: this.#messages });
    this.#transcript?.write("sent", text);
    this.stats.framesSent++;
    socket.write(frameBytes(text, this.#encoding));
    if (token) this.#pendingAcks.set(token, { code: frame.code, sessionId: frame.sessionId ?? null, sentAt: Date.now(), connection: this.#connection });
    return true;
  }

  #sweepAcks(ackMs: number): void {
    const now = Date.now();
    for (const [token, p] of this.#pendingAcks) {
      if (now - p.sentAt < ackMs) continue;
      this.#pendingAcks.delete(token);
      this.stats.unacknowledged++;
      this.#transcript?.write("note", `no MV for ${p.code} TK${token} within ${ackMs} ms`);
      this.o.onEvent?.({ type: "unacknowledged", code: p.code, token, sessionId: p.sessionId, seconds: ackMs / 1000 });
    }
  }

  #onFrame(text: string, n: number): void {
    this.#transcript?.write("received", text);
    this.stats.framesReceived++;
    if (n !== this.#connection) return; // a late frame of a socket we already gave up
    let f: Frame;
    try {
      f = decodeFrame(text);
    } catch {
      this.#transcript?.write("note", "not an SDMP frame; ignored");
      return;
    }
    // A TK on CallGem's own message is its business: the media layer never answers with MV.
    const si = param(f, "SI") ?? this.#byTi(param(f, "TI"));
    const t = si === undefined ? undefined : this.#sessions.get(si);
    switch (f.code) {
      case "DA":
        return;
      case "MV": {
        const tk = param(f, "TK") ?? "";
        if (this.#pendingAcks.delete(tk)) this.stats.acknowledged++;
        else this.#transcript?.write("note", `MV for a token we are not waiting for: ${tk}`);
        return;
      }
      case "ER": {
        this.stats.errorsReceived++;
        const fm = param(f, "FM") ?? "";
        this.#pendingAcks.delete(/\\TK([^\\"]+)/.exec(fm)?.[1] ?? "");
        const failed = /\\SI([^\\"]+)/.exec(fm)?.[1] ?? null;
        const rejected = failed === null ? undefined : this.#sessions.get(failed);
        const frame = /^(?:[A-Z0-9]{2}:){0,2}([A-Z]{2})/.exec(fm)?.[1] ?? "";
        // CallGem did not take that IC: it does not know the session, so no ND/SD may follow.
        if (rejected && frame === "IC") rejected.knownOn = 0;
        this.o.onEvent?.({ type: "rejected", sessionId: failed, code: param(f, "EC") ?? "", message: param(f, "MS") ?? fm, frame });
        return;
      }
      case "CA":
        if (!t) return;
        t.campaign = param(f, "CN") ?? t.campaign;
        if (t.status !== "delivered") this.o.onEvent?.({ type: "campaign", sessionId: t.offer.sessionId, campaign: t.campaign ?? "" });
        return;
      case "TQ":
        if (t) this.#onQueueTimer(t, f);
        return;
      case "CT":
        if (t) t.delivering = this.#onTransfer(t, f, n).finally(() => (t.delivering = undefined));
        else this.#transcript?.write("note", "CT for a session we do not have");
        return;
      case "CD":
        if (t) this.#onDisconnect(t, f);
        return;
      default:
        this.#transcript?.write("note", `unhandled message ${f.code}`);
    }
  }

  /** TQ starts (or, with another GA, restarts) the queue timer; it keeps running through refusals. */
  #onQueueTimer(t: Tracked, f: Frame): void {
    if (t.status === "ended") return;
    if (param(f, "CN")) t.campaign = param(f, "CN")!;
    t.queue = param(f, "GA") ?? t.queue;
    // The email is with an agent already: CallGem is only catching up, no timer of ours runs.
    if (t.status === "delivered") return;
    clearTimeout(t.timer);
    t.timer = undefined;
    t.queueExpired = false;
    t.timedOut = false;
    if (t.status !== "assigned") t.status = "queued";
    const seconds = Number(param(f, "QT"));
    const timeout = Number.isFinite(seconds) && seconds > 0 ? seconds : null;
    if (timeout !== null) {
      t.timer = setTimeout(() => {
        t.timer = undefined;
        t.queueExpired = true;
        if (t.status === "queued") this.#queueTimeout(t);
      }, timeout * 1000);
    }
    this.o.onEvent?.({ type: "queued", sessionId: t.offer.sessionId, queue: t.queue ?? "", timeoutSeconds: timeout });
  }

  #queueTimeout(t: Tracked): void {
    t.queueExpired = false;
    if (t.knownOn !== this.#connection) return;
    const sent = this.#send({ code: "QT", params: [...this.#cn(t), ["SI", t.offer.sessionId], ...(t.queue ? ([["GA", t.queue]] as [string, string][]) : [])], sessionId: t.offer.sessionId });
    if (!sent) return;
    t.timedOut = true;
    this.o.onEvent?.({ type: "queue-timeout", sessionId: t.offer.sessionId, queue: t.queue ?? "" });
  }

  async #onTransfer(t: Tracked, f: Frame, n: number): Promise<void> {
    const agent = param(f, "AN") ?? param(f, "AE") ?? "";
    const endpoint = param(f, "AE") ?? agent;
    if (param(f, "CN")) t.campaign = param(f, "CN")!;
    const base: [string, string][] = [...this.#cn(t), ["SI", t.offer.sessionId], ["TI", tiOf(t.offer.sessionId)], ["AE", endpoint]];
    if (param(f, "AN")) base.push(["AN", agent]);

    if (t.status === "delivered") {
      // A held session coming back to the agent who has it: CallGem's view now matches ours.
      if (agent === t.holder) {
        t.stationOn = n;
        t.endpoint = endpoint;
        t.agent = agent;
        this.#send({ code: "TS", params: [...base, ["RS", "0"]], sessionId: t.offer.sessionId });
        return;
      }
      this.#refuse(t, base, agent, "held-by-another-agent", `the email is with ${t.holder ?? "another agent"}`);
      return;
    }
    if (t.status !== "queued" && t.status !== "offered") return;
    if (t.timedOut) {
      // The CT crossed our QT: failed because the queue timed out (TS with TQ).
      this.#refuse(t, [...base, ["TQ", true]], agent, "queue-timed-out", "the queue timer had run out (QT sent)");
      return;
    }
    if (this.#holdsUnclaimed(agent)) {
      this.#refuse(t, base, agent, "agent-busy", "the agent is working on an email CallGem has not given back to her yet");
      return;
    }
    t.status = "assigned";
    t.agent = agent;
    t.endpoint = endpoint;
    this.o.onEvent?.({ type: "assigned", sessionId: t.offer.sessionId, agent, endpoint });
    let result: DeliveryResult;
    try {
      result = await this.o.deliver(t.offer.sessionId, agent);
    } catch (error) {
      result = { refused: "delivery-error", message: (error as Error).message };
    }
    if (t.status !== "assigned") return; // ended meanwhile
    if (result === true) {
      t.status = "delivered";
      t.holder = agent;
      clearTimeout(t.timer);
      t.timer = undefined;
      this.o.onEvent?.({ type: "delivered", sessionId: t.offer.sessionId, agent });
      // If the socket closed meanwhile, the resync offers it as held (HE) instead.
      if (n === this.#connection && this.#send({ code: "TS", params: [...base, ["RS", "0"]], sessionId: t.offer.sessionId })) t.stationOn = n;
      return;
    }
    const refusal = result === false ? { refused: "unknown-agent" as const, message: `agent ${agent} has no account in Postroom` } : result;
    t.status = n === this.#connection ? "queued" : "pending";
    t.agent = null;
    t.endpoint = null;
    if (n !== this.#connection) return;
    this.#refuse(t, base, agent, refusal.refused, refusal.message);
  }

  /** TS RS2: the session stays queued and its queue timer keeps running; an expired one sends QT now. */
  #refuse(t: Tracked, base: [string, string | true][], agent: string, reason: RefusalReason, message: string): void {
    this.stats.refusals++;
    const tq = base.filter(([k]) => k === "TQ");
    this.#send({ code: "TS", params: [...base.filter(([k]) => k !== "TQ"), ["RS", "2"], ...tq], sessionId: t.offer.sessionId });
    this.o.onEvent?.({ type: "delivery-failed", sessionId: t.offer.sessionId, agent, reason, message });
    if (t.status === "queued" && t.queueExpired) this.#queueTimeout(t);
  }

  /** Whether an agent works on an email whose station CallGem has not bound on this connection. */
  #holdsUnclaimed(agent: string): boolean {
    for (const t of this.#sessions.values()) if (t.status === "delivered" && t.holder === agent && t.stationOn !== this.#connection) return true;
    return false;
  }

  #onDisconnect(t: Tracked, f: Frame): void {
    if (t.status === "ended") return;
    if (t.status === "delivered" && t.stationOn !== this.#connection) {
      // CallGem ends a held session it had not given back to her: answer, but she keeps working.
      this.#send({ code: "ND", params: [["SI", t.offer.sessionId], ["CA", String(this.#causeOf("disconnected-by-acd"))], ...this.#cn(t)], sessionId: t.offer.sessionId });
      t.knownOn = 0;
      return;
    }
    if (t.status === "delivered") {
      this.#end(t, this.#causeOf("disconnected-by-acd"), "disconnected-by-acd");
      return;
    }
    // No agent ever had it: answer ND and let the bridge's unanswered policy decide.
    const reason = hasFlag(f, "DA") ? "abandoned" : t.timedOut ? "queue-timeout" : "disconnected";
    clearTimeout(t.timer);
    t.status = "ended";
    this.#send({ code: "ND", params: [["SI", t.offer.sessionId], ["CA", String(this.#causeOf(reason === "abandoned" ? "abandoned" : "disconnected-by-acd"))], ...this.#cn(t)], sessionId: t.offer.sessionId });
    this.#sessions.delete(t.offer.sessionId);
    this.o.onEvent?.({ type: "unanswered", sessionId: t.offer.sessionId, reason });
  }

  /** Ends a session: ND only if CallGem knows it on this socket, SD only for a station it bound here. */
  #end(t: Tracked, cause: number, outcome: string): void {
    clearTimeout(t.timer);
    t.status = "ended";
    const live = this.#connected && t.knownOn === this.#connection;
    if (live) {
      this.#send({ code: "ND", params: [["SI", t.offer.sessionId], ["CA", String(cause)], ...this.#cn(t), ...(t.endpoint && t.stationOn === this.#connection ? ([["AE", t.endpoint]] as [string, string][]) : [])], sessionId: t.offer.sessionId });
      if (t.endpoint && t.stationOn === this.#connection) this.#send({ code: "SD", params: [...this.#cn(t), ["AE", t.endpoint]], sessionId: t.offer.sessionId });
    } else {
      this.#transcript?.write("note", `session ${t.offer.sessionId} ended (${outcome}) while CallGem does not know it: no ND/SD`);
    }
    this.#sessions.delete(t.offer.sessionId);
    this.o.onEvent?.({ type: "completed", sessionId: t.offer.sessionId, agent: t.holder ?? t.agent, outcome });
  }

  #cn(t: Tracked): [string, string][] {
    return t.campaign ? [["CN", t.campaign]] : [];
  }

  #byTi(ti: string | undefined): string | undefined {
    if (ti === undefined) return undefined;
    for (const t of this.#sessions.values()) if (tiOf(t.offer.sessionId) === ti) return t.offer.sessionId;
    return undefined;
  }
}

/** TN for an email without a From: address-like (so not a flag), in a reserved domain no mail reaches. */
export const NO_SENDER = "no-sender@postroom.invalid";

function tiOf(sessionId: string): string {
  return sessionId.slice(0, 80);
}
