import { connect, type Socket } from "node:net";
import { decodeFrame, encodeFrame, FrameReader, hasFlag, param, SDMP_MESSAGES, type Frame, type MessageSpec } from "./codec.js";
import { Transcript } from "./transcript.js";

/** What the adapter needs to know to offer one email as an SDMP session. */
export interface SoftdialOffer {
  /** Postroom's session id: globally unique, used as SI (1–120 chars). */
  sessionId: string;
  /** Sender address (TN). */
  from: string;
  /** The mailbox address (DN): CallGem routes on it. */
  to: string;
  /** Reference to the archived email and a short summary (DT); the body stays in the archive. */
  reference: string;
  /** Further IC parameters a site's controller expects (they must be in the message table). */
  extra?: Record<string, string>;
}

export type SoftdialEvent =
  | { type: "campaign"; sessionId: string; campaign: string }
  | { type: "queued"; sessionId: string; queue: string; timeoutSeconds: number | null }
  | { type: "queue-timeout"; sessionId: string; queue: string }
  | { type: "assigned"; sessionId: string; agent: string; endpoint: string }
  | { type: "delivered"; sessionId: string; agent: string }
  | { type: "delivery-failed"; sessionId: string; agent: string; reason: string }
  | { type: "completed"; sessionId: string; agent: string | null; outcome: string }
  | { type: "rejected"; sessionId: string | null; code: string; message: string }
  | { type: "connected"; connection: number; reoffered: number }
  | { type: "disconnected"; connection: number; reason: string };

export interface SoftdialAdapterOptions {
  host: string;
  port: number;
  /** Our switch id, declared with TO and sent as IC on each IC. */
  switchId: string;
  /** Channels declared with TO (NT). */
  channels?: number;
  /** VS interval; CallGem then sends DA this often. A connection silent for 3 intervals is dropped. */
  heartbeatSeconds?: number;
  /** Folder for per-connection transcripts; none when unset. */
  transcriptDir?: string;
  transcriptPrefix?: string;
  /** Hands the session to the agent CallGem chose; false or a throw means it could not (TS RS2). */
  deliver: (sessionId: string, agent: string) => Promise<boolean>;
  onEvent?: (e: SoftdialEvent) => void;
  /** Reconnect backoff bounds. */
  backoff?: { initialMs: number; maxMs: number; stableMs: number };
  /** The message table; extend it when a controller shows more. */
  messages?: Record<string, MessageSpec>;
  /** ND cause when CallGem ends a session (CD) and when an agent closes it. */
  causes?: { disconnected: number; closedByAgent: number };
}

type Status = "pending" | "offered" | "queued" | "assigned" | "delivered" | "ended";

interface Tracked {
  offer: SoftdialOffer;
  status: Status;
  campaign: string | null;
  queue: string | null;
  agent: string | null;
  endpoint: string | null;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Postroom as the media layer of Softdial CallGem over SDMP (TCP, port 6502, ASCII). Declares
 * itself with TO, offers each session with IC, follows CA / TQ / CT / CD, runs the queue timer
 * and reports QT, answers TS once the agent has the email, ends with ND and frees the endpoint
 * with SD. CallGem drops every session of a socket that closes, so after a reconnect every
 * session not yet delivered is offered again with its original SI.
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
  #lastHeard = 0;
  readonly #messages: Record<string, MessageSpec>;
  /** Counters for the metrics work: frames and connection changes. */
  readonly stats = { framesSent: 0, framesReceived: 0, errorsReceived: 0, reconnects: 0, reoffered: 0 };

  constructor(private readonly o: SoftdialAdapterOptions) {
    this.#messages = o.messages ?? SDMP_MESSAGES;
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
    for (const s of this.#sessions.values()) clearTimeout(s.timer);
    const socket = this.#socket;
    if (socket && !socket.destroyed) await new Promise<void>((r) => socket.end(() => r()));
    socket?.destroy();
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Offers a session now if connected, else as soon as the connection is up. Idempotent per SI. */
  offer(o: SoftdialOffer): void {
    if (this.#sessions.has(o.sessionId)) return;
    const t: Tracked = { offer: o, status: "pending", campaign: null, queue: null, agent: null, endpoint: null, timer: undefined };
    this.#sessions.set(o.sessionId, t);
    if (this.#connected) this.#sendIc(t);
  }

  /** The agent closed the session in Postroom: tell CallGem (ND) and free the endpoint (SD). */
  close(sessionId: string, outcome: string): void {
    const t = this.#sessions.get(sessionId);
    if (!t || t.status === "ended") return;
    this.#end(t, this.o.causes?.closedByAgent ?? 0, outcome);
  }

  /** Sessions not yet in an agent's hands (what a reconnect re-offers). */
  undelivered(): string[] {
    return [...this.#sessions.values()].filter((t) => t.status !== "delivered" && t.status !== "ended").map((t) => t.offer.sessionId);
  }

  #connect(): void {
    if (this.#stopped) return;
    const n = ++this.#connection;
    if (this.o.transcriptDir) this.#transcript = new Transcript({ dir: this.o.transcriptDir, prefix: this.o.transcriptPrefix ?? `softdial-${this.o.switchId}` }, n);
    this.#transcript?.write("note", `connecting to ${this.o.host}:${this.o.port}`);
    const socket = connect({ host: this.o.host, port: this.o.port });
    this.#socket = socket;
    socket.setEncoding("latin1");
    socket.setNoDelay(true);
    const reader = new FrameReader();
    const connectDeadline = setTimeout(() => socket.destroy(new Error("connect timed out")), 10_000);
    socket.once("connect", () => {
      clearTimeout(connectDeadline);
      this.#onConnected(n);
    });
    socket.on("data", (chunk: string) => {
      this.#lastHeard = Date.now();
      for (const text of reader.push(chunk)) this.#onFrame(text);
    });
    socket.on("error", (e) => this.#transcript?.write("note", `socket error: ${e.message}`));
    socket.once("close", () => {
      clearTimeout(connectDeadline);
      this.#onClosed(n);
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
    // The backoff starts over only once this connection has proven stable.
    clearTimeout(this.#stableTimer);
    this.#stableTimer = setTimeout(() => (this.#attempt = 0), this.o.backoff?.stableMs ?? 30_000);
    let reoffered = 0;
    for (const t of this.#sessions.values()) {
      if (t.status === "delivered" || t.status === "ended") continue;
      if (t.status !== "pending") reoffered++;
      this.#sendIc(t);
    }
    this.stats.reoffered += reoffered;
    this.o.onEvent?.({ type: "connected", connection: n, reoffered });
  }

  #onClosed(n: number): void {
    const was = this.#connected;
    this.#connected = false;
    clearInterval(this.#watchdog);
    clearTimeout(this.#stableTimer);
    this.#transcript?.write("note", "connection closed");
    // CallGem discarded our sessions with the socket: stop their queue timers; they are re-offered.
    for (const t of this.#sessions.values()) {
      clearTimeout(t.timer);
      t.timer = undefined;
    }
    if (was) this.o.onEvent?.({ type: "disconnected", connection: n, reason: "socket closed" });
    if (this.#stopped) return;
    const b = this.o.backoff ?? { initialMs: 500, maxMs: 30_000, stableMs: 30_000 };
    const base = Math.min(b.maxMs, b.initialMs * 2 ** this.#attempt++);
    const delay = base / 2 + Math.random() * (base / 2);
    this.stats.reconnects++;
    this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
  }

  #sendIc(t: Tracked): void {
    try {
      this.#sendIcFrame(t);
    } catch (error) {
      // A frame we cannot build would be rejected by CallGem as well: report it, do not retry.
      this.#sessions.delete(t.offer.sessionId);
      this.o.onEvent?.({ type: "rejected", sessionId: t.offer.sessionId, code: "local", message: (error as Error).message });
    }
  }

  #sendIcFrame(t: Tracked): void {
    t.status = "offered";
    t.campaign = null;
    t.queue = null;
    t.agent = null;
    t.endpoint = null;
    this.#send({
      code: "IC",
      params: [
        ["TD", "default"],
        ["CN", "system"],
        ["IC", this.o.switchId],
        ["SI", t.offer.sessionId],
        ["TI", t.offer.sessionId.slice(0, 80)],
        ["TN", t.offer.from],
        ["DN", t.offer.to],
        ["MT", "email"],
        ["DT", t.offer.reference],
        ...Object.entries(t.offer.extra ?? {}),
      ],
    });
  }

  #send(frame: Frame): void {
    const text = encodeFrame(frame, this.#messages);
    this.#transcript?.write("sent", text);
    this.stats.framesSent++;
    this.#socket?.write(text, "latin1");
  }

  #onFrame(text: string): void {
    this.#transcript?.write("received", text);
    this.stats.framesReceived++;
    let f: Frame;
    try {
      f = decodeFrame(text);
    } catch {
      return; // kept in the transcript; nothing we can act on
    }
    const tk = param(f, "TK");
    if (tk) this.#send({ code: "MV", params: [["TK", tk]] });
    const si = param(f, "SI") ?? this.#bySessionTi(param(f, "TI"));
    const t = si === undefined ? undefined : this.#sessions.get(si);
    switch (f.code) {
      case "DA":
      case "MV":
        return;
      case "ER": {
        this.stats.errorsReceived++;
        const fm = param(f, "FM") ?? "";
        const failed = /\\SI([^\\]+)/.exec(fm)?.[1] ?? null;
        this.o.onEvent?.({ type: "rejected", sessionId: failed, code: param(f, "EC") ?? "", message: param(f, "MS") ?? fm });
        return;
      }
      case "CA":
        if (!t) return;
        t.campaign = param(f, "CN") ?? t.campaign;
        this.o.onEvent?.({ type: "campaign", sessionId: t.offer.sessionId, campaign: t.campaign ?? "" });
        return;
      case "TQ": {
        if (!t || t.status === "delivered" || t.status === "ended") return;
        clearTimeout(t.timer);
        t.status = "queued";
        t.queue = param(f, "GA") ?? t.queue;
        if (param(f, "CN")) t.campaign = param(f, "CN")!;
        const seconds = Number(param(f, "QT"));
        const timeout = Number.isFinite(seconds) && seconds > 0 ? seconds : null;
        if (timeout !== null) {
          t.timer = setTimeout(() => {
            t.timer = undefined;
            if (t.status !== "queued" || !this.#connected) return;
            this.#send({ code: "QT", params: [...this.#cn(t), ["SI", t.offer.sessionId], ...(t.queue ? ([["GA", t.queue]] as [string, string][]) : [])] });
            this.o.onEvent?.({ type: "queue-timeout", sessionId: t.offer.sessionId, queue: t.queue ?? "" });
          }, timeout * 1000);
        }
        this.o.onEvent?.({ type: "queued", sessionId: t.offer.sessionId, queue: t.queue ?? "", timeoutSeconds: timeout });
        return;
      }
      case "CT":
        if (t) void this.#onTransfer(t, f);
        return;
      case "CD":
        if (!t || t.status === "ended") return;
        this.#end(t, this.o.causes?.disconnected ?? 0, hasFlag(f, "DA") ? "abandoned" : "disconnected-by-acd");
        return;
      default:
        this.#transcript?.write("note", `unhandled message ${f.code}`);
    }
  }

  async #onTransfer(t: Tracked, f: Frame): Promise<void> {
    clearTimeout(t.timer);
    t.timer = undefined;
    const agent = param(f, "AN") ?? param(f, "AE") ?? "";
    const endpoint = param(f, "AE") ?? agent;
    t.status = "assigned";
    t.agent = agent;
    t.endpoint = endpoint;
    if (param(f, "CN")) t.campaign = param(f, "CN")!;
    this.o.onEvent?.({ type: "assigned", sessionId: t.offer.sessionId, agent, endpoint });
    let ok = false;
    let reason = "the agent is not known to Postroom";
    try {
      ok = await this.o.deliver(t.offer.sessionId, agent);
    } catch (error) {
      reason = (error as Error).message;
    }
    if (t.status !== "assigned") return; // ended or reconnected meanwhile
    const base: [string, string][] = [...this.#cn(t), ["SI", t.offer.sessionId], ["TI", t.offer.sessionId.slice(0, 80)], ["AE", endpoint]];
    if (param(f, "AN")) base.push(["AN", agent]);
    if (ok) {
      t.status = "delivered";
      this.#send({ code: "TS", params: [...base, ["RS", "0"]] });
      this.o.onEvent?.({ type: "delivered", sessionId: t.offer.sessionId, agent });
    } else {
      t.status = "queued";
      this.#send({ code: "TS", params: [...base, ["RS", "2"]] });
      this.o.onEvent?.({ type: "delivery-failed", sessionId: t.offer.sessionId, agent, reason });
    }
  }

  #end(t: Tracked, cause: number, outcome: string): void {
    clearTimeout(t.timer);
    const endpoint = t.endpoint;
    t.status = "ended";
    this.#send({ code: "ND", params: [["SI", t.offer.sessionId], ["CA", String(cause)], ...this.#cn(t), ...(endpoint ? ([["AE", endpoint]] as [string, string][]) : [])] });
    if (endpoint) this.#send({ code: "SD", params: [...this.#cn(t), ["AE", endpoint]] });
    this.#sessions.delete(t.offer.sessionId);
    this.o.onEvent?.({ type: "completed", sessionId: t.offer.sessionId, agent: t.agent, outcome });
  }

  #cn(t: Tracked): [string, string][] {
    return t.campaign ? [["CN", t.campaign]] : [];
  }

  #bySessionTi(ti: string | undefined): string | undefined {
    if (ti === undefined) return undefined;
    for (const t of this.#sessions.values()) if (t.offer.sessionId.slice(0, 80) === ti) return t.offer.sessionId;
    return undefined;
  }
}
