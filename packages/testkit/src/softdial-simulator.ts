import { randomUUID } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";

/**
 * A stand-in for Softdial CallGem's controller, written from Sytel's public SDMP description
 * (see /work/shared/reference/softdial-sdmp.md), for tests of a media-layer client. It listens on
 * 127.0.0.1 and records every frame in both directions so a test can assert what CallGem saw,
 * not only what Postroom believes it sent.
 *
 * What it plays:
 * - the port's encoding: `ascii` (CallGem's 6502: a byte outside printable ASCII is ER 901) or
 *   `utf16le` (6500, no BOM; a control character is ER 901); SDMP 1 frames and SDMP 2 routed
 *   ones (`CG:CT:IC\...`) alike; frames split across or joined in TCP chunks;
 * - VS → DA every interval; TO declares the switch;
 * - IC routed by its DN to a campaign and queue (CA, then TQ with the queue's timer); an IC with
 *   HE naming an agent waits for that agent only; a free agent logged in to the queue gets CT;
 * - TS RS0 makes the session delivered; RS1/RS2 puts it back in the queue *without* restarting
 *   the queue timer (the media layer must send QT when it runs out) and offers it again after
 *   `retryMs`, possibly to the same agent, as CallGem does;
 * - QT moves the session to the queue's overflow (a new TQ) or, without one, ends it with CD;
 *   ND ends a session; SD frees the endpoint;
 * - every accepted media-layer frame carrying TK is acknowledged with MV\TK<token>;
 * - ER for what it cannot accept, the faulty frame in FM: 901 non-ASCII or control character,
 *   902 a message the media layer may not send (MV among them) or does not exist, 906 ND/SD/TS/QT
 *   for a session or endpoint that is not live on this socket, 30 no campaign for the DN,
 *   120 neither SI nor TN, 2 a parameter the message does not take or a missing mandatory one;
 * - when a socket closes, every session and station bound to it is dropped, as CallGem does.
 * It does not check protocol details the public guide leaves open.
 */

export interface SimRoute {
  /** The destination address (DN) this route matches. */
  dn: string;
  campaign: string;
  queue: string;
}

export interface SimQueue {
  /** Seconds for the queue timer sent with TQ. */
  timeoutSeconds: number;
  /** Where a session goes after QT; without one CallGem disconnects it. */
  overflow?: string;
}

export interface SoftdialSimulatorOptions {
  routes: SimRoute[];
  queues: Record<string, SimQueue>;
  /** Message codes the simulator accepts from the media layer. */
  accepts?: string[];
  /** The port's encoding: ascii (6502, the default) or utf16le (6500). */
  encoding?: "ascii" | "utf16le";
  /** Delay before a refused session (TS RS1/RS2) is offered to an agent again. Default 1000 ms. */
  retryMs?: number;
  /** Do not acknowledge TK with MV (to test a client's deadline). */
  silentMv?: boolean;
  /** An SDMP 2 route put before every frame sent, e.g. `CG:CT:`. */
  route?: string;
  /** Splits every write into chunks of this many bytes (frames across TCP chunks). */
  chunkBytes?: number;
}

export interface SimFrame {
  connection: number;
  direction: "in" | "out";
  at: number;
  text: string;
  code: string;
  params: Record<string, string>;
}

export interface SimSession {
  si: string;
  connection: number;
  campaign: string;
  queue: string;
  state: "queued" | "transferring" | "delivered" | "ended";
  agent: string | null;
  /** How many times an IC with this SI arrived (over all connections). */
  offers: number;
  /** Agents this session was delivered to (TS RS0), over all connections. */
  deliveredTo: string[];
  /** The agent an IC's HE hint named, if any. */
  hint: string | null;
  /** How the session ended: ND from the media layer, CD from here, or the socket closing. */
  endedBy: "nd" | "cd" | "socket" | null;
}

interface SimAgent {
  name: string;
  endpoint: string;
  queues: string[];
  busy: string | null;
  /** The connection whose session holds the station. */
  connection: number;
}

const ACCEPTS = ["VS", "TO", "IC", "TS", "QT", "ND", "SD"];
/** Parameters each media-layer message may carry (a frame with another is rejected whole). */
const PARAMS: Record<string, string[]> = {
  VS: ["VI"],
  TO: ["IC", "NT", "ND", "SD", "TS", "TK"],
  IC: ["TD", "CN", "IC", "SI", "TI", "TN", "DN", "MT", "DT", "HE", "GI", "TK"],
  TS: ["CN", "SI", "TI", "AE", "AN", "RS", "TQ", "TK"],
  QT: ["CN", "SI", "GA", "TK"],
  ND: ["SI", "CA", "CN", "AE", "TK"],
  SD: ["CN", "AE", "TK"],
};
const REQUIRED: Record<string, string[]> = { VS: ["VI"], TO: ["IC"], IC: ["IC"], TS: ["SI", "RS"], QT: ["SI"], ND: ["SI", "CA"], SD: ["AE"] };
const FORBIDDEN_IN_VALUES = /[/:*?"<>|&%+!';]/;

function parse(text: string): { code: string; params: Record<string, string> } {
  const body = text.replace(/^(?:[A-Z]{2}:){1,2}/, "");
  const [code = "", ...rest] = body.split("\\");
  const params: Record<string, string> = {};
  for (const p of rest) params[p.slice(0, 2)] = p.slice(2);
  return { code, params };
}

export class SoftdialSimulator {
  readonly frames: SimFrame[] = [];
  readonly sessions = new Map<string, SimSession>();
  readonly #agents: SimAgent[] = [];
  readonly #sockets = new Map<number, Socket>();
  readonly #heartbeats = new Map<number, NodeJS.Timeout>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #server: Server | undefined;
  #connections = 0;
  port = 0;

  constructor(private readonly o: SoftdialSimulatorOptions) {}

  static async start(o: SoftdialSimulatorOptions): Promise<SoftdialSimulator> {
    const sim = new SoftdialSimulator(o);
    await sim.#listen();
    return sim;
  }

  get encoding(): "ascii" | "utf16le" {
    return this.o.encoding ?? "ascii";
  }

  async #listen(): Promise<void> {
    this.#server = createServer((socket) => this.#accept(socket));
    await new Promise<void>((resolve, reject) => {
      this.#server!.once("error", reject);
      this.#server!.listen(0, "127.0.0.1", () => resolve());
    });
    const a = this.#server.address();
    this.port = typeof a === "object" && a ? a.port : 0;
  }

  /** Frames the media layer sent, optionally of one message code. */
  received(code?: string): SimFrame[] {
    return this.frames.filter((f) => f.direction === "in" && (code === undefined || f.code === code));
  }

  /** Frames the simulator sent. */
  sent(code?: string): SimFrame[] {
    return this.frames.filter((f) => f.direction === "out" && (code === undefined || f.code === code));
  }

  get openConnections(): number {
    return this.#sockets.size;
  }

  /** The session an agent's station holds now, if any. */
  busyWith(name: string): string | null {
    return this.#agents.find((a) => a.name === name)?.busy ?? null;
  }

  /** An agent logs in; a queued session of one of its queues is transferred to it right away. */
  loginAgent(name: string, queues: string[], endpoint = `ext-${name}`): void {
    this.#agents.push({ name, endpoint, queues, busy: null, connection: 0 });
    this.#distribute();
  }

  /** CallGem ends a session (as when the agent wraps up in Softdial); `abandon` sets DA. */
  disconnect(si: string, abandon = false): void {
    const s = this.sessions.get(si);
    const socket = s && this.#sockets.get(s.connection);
    if (!s || !socket || s.state === "ended") throw new Error(`no live session ${si}`);
    const agent = this.#agents.find((a) => a.busy === si);
    const params: [string, string][] = [["TD", "default"], ["CN", s.campaign], ["SI", si], ...(agent ? ([["AN", agent.name], ["AE", agent.endpoint]] as [string, string][]) : [])];
    s.endedBy = "cd";
    this.#write(s.connection, "CD", abandon ? [...params, ["DA", ""]] : params);
  }

  /** Sends raw text as a frame on every connection (for tests of how the client treats odd input). */
  sendRaw(text: string): void {
    for (const [n, socket] of this.#sockets) {
      this.#record(n, "out", text);
      socket.write(this.#bytes(`${text}\0`));
    }
  }

  /** Cuts every connection, as a network failure or a controller restart would. */
  dropConnections(): void {
    for (const socket of this.#sockets.values()) socket.destroy();
  }

  /**
   * The controller goes away (connections cut, the port refuses) or comes back on the same port.
   * Sessions of the cut connections are dropped as on any close.
   */
  async setDown(down: boolean): Promise<void> {
    if (down) {
      this.dropConnections();
      await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()));
      this.#server = undefined;
      return;
    }
    if (this.#server) return;
    const server = createServer((socket) => this.#accept(socket));
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => resolve());
    });
  }

  async stop(): Promise<void> {
    this.dropConnections();
    for (const t of this.#heartbeats.values()) clearInterval(t);
    for (const t of this.#timers) clearTimeout(t);
    await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()));
  }

  #bytes(text: string): Buffer {
    return Buffer.from(text, this.encoding === "ascii" ? "latin1" : "utf16le");
  }

  #accept(socket: Socket): void {
    const n = ++this.#connections;
    this.#sockets.set(n, socket);
    socket.setNoDelay(true);
    const step = this.encoding === "ascii" ? 1 : 2;
    let buffer = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      let start = 0;
      for (let i = 0; i + step <= buffer.length; i += step) {
        if (buffer[i] !== 0 || (step === 2 && buffer[i + 1] !== 0)) continue;
        const raw = buffer.subarray(start, i);
        start = i + step;
        if (raw.length) this.#onFrame(n, raw);
      }
      buffer = Buffer.from(buffer.subarray(start));
    });
    socket.on("error", () => undefined);
    // The peer's FIN already ends its resources: a client that reconnects at once must find
    // its sessions gone, not "already existing" on a socket that is only half closed.
    socket.once("end", () => this.#closed(n));
    socket.once("close", () => this.#closed(n));
  }

  #closed(n: number): void {
    if (!this.#sockets.has(n)) return;
    this.#sockets.get(n)?.destroy();
    this.#sockets.delete(n);
    clearInterval(this.#heartbeats.get(n));
    this.#heartbeats.delete(n);
    // Resources belong to the socket that declared them: sessions and the stations they hold.
    for (const s of this.sessions.values()) {
      if (s.connection !== n || s.state === "ended") continue;
      s.state = "ended";
      s.endedBy = "socket";
    }
    for (const a of this.#agents) if (a.connection === n) a.busy = null;
  }


  #record(connection: number, direction: "in" | "out", text: string): void {
    this.frames.push({ connection, direction, at: Date.now(), text, ...parse(text) });
  }

  #write(connection: number, code: string, params: [string, string][]): void {
    const text = [code, ...params.map(([k, v]) => k + v)].join("\\");
    this.#record(connection, "out", text);
    const socket = this.#sockets.get(connection);
    const bytes = this.#bytes(`${this.o.route ?? ""}${text}\0`);
    const size = this.o.chunkBytes ?? bytes.length;
    for (let i = 0; i < bytes.length; i += size) socket?.write(bytes.subarray(i, i + size));
  }

  #error(connection: number, code: number, faulty: string, message: string): void {
    this.#write(connection, "ER", [["EC", String(code)], ["FM", `"${faulty}"`], ["MS", message]]);
  }

  #later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      fn();
    }, ms);
    this.#timers.add(t);
  }

  /** What the port itself refuses, before the message is read: bytes, characters, structure. */
  #wireProblem(raw: Buffer, text: string): string | undefined {
    if (this.encoding === "ascii") {
      for (const b of raw) if (b < 0x20 || b > 0x7e) return `byte 0x${b.toString(16)} is not printable ASCII`;
    } else {
      if (raw.length % 2 !== 0) return "odd number of bytes on the UTF-16LE port";
      // eslint-disable-next-line no-control-regex -- control characters are exactly what the port refuses
      if (/[\u0000-\u001f\u007f-\u009f]/.test(text)) return "control character";
      if (text.startsWith("\ufeff")) return "byte order mark";
    }
    return undefined;
  }

  #onFrame(n: number, raw: Buffer): void {
    const text = raw.toString(this.encoding === "ascii" ? "latin1" : "utf16le");
    this.#record(n, "in", text);
    const wire = this.#wireProblem(raw, text);
    if (wire) return this.#error(n, 901, text, wire);
    const { code, params } = parse(text);
    if (!(this.o.accepts ?? ACCEPTS).includes(code)) return this.#error(n, 902, text, `unexpected message ${code}`);
    for (const [k, v] of Object.entries(params)) {
      if (!(PARAMS[code] ?? []).includes(k)) return this.#error(n, 2, text, `redundant parameter ${k}`);
      if (FORBIDDEN_IN_VALUES.test(v)) return this.#error(n, 901, text, `forbidden character in ${k}`);
    }
    const missing = (REQUIRED[code] ?? []).find((k) => params[k] === undefined);
    if (missing) return this.#error(n, 2, text, `${code} needs ${missing}`);
    if (params.TK !== undefined && (params.TK.length < 1 || params.TK.length > 80)) return this.#error(n, 2, text, "TK must be 1-80 characters");
    if (this.#handle(n, code, params, text) === false) return;
    if (params.TK !== undefined && !this.o.silentMv) this.#write(n, "MV", [["TK", params.TK]]);
  }

  /** Applies one accepted frame; false when it produced ER (no MV then). */
  #handle(n: number, code: string, params: Record<string, string>, text: string): boolean {
    switch (code) {
      case "VS": {
        clearInterval(this.#heartbeats.get(n));
        const seconds = Number(params.VI ?? "0");
        if (seconds > 0) {
          this.#write(n, "DA", []);
          this.#heartbeats.set(n, setInterval(() => this.#write(n, "DA", []), seconds * 1000));
        }
        return true;
      }
      case "TO":
        return true;
      case "IC": {
        if (params.SI !== undefined && (params.SI.length < 1 || params.SI.length > 120)) return this.#fail(n, 2, text, "SI must be 1-120 characters");
        if (params.TI !== undefined && (params.TI.length < 1 || params.TI.length > 80)) return this.#fail(n, 2, text, "TI must be 1-80 characters");
        if ((params.DT?.length ?? 0) > 128_000) return this.#fail(n, 2, text, "DT longer than 128000 characters");
        if (!params.SI && !params.TN) return this.#fail(n, 120, text, "no SI and no TN");
        const route = this.o.routes.find((r) => r.dn === params.DN);
        if (!route) return this.#fail(n, 30, text, "no campaign for this destination");
        const si = params.SI ?? randomUUID();
        const before = this.sessions.get(si);
        if (before && before.state !== "ended") return this.#fail(n, 3, text, "session already exists");
        const s: SimSession = {
          si,
          connection: n,
          campaign: route.campaign,
          queue: route.queue,
          state: "queued",
          agent: null,
          offers: (before?.offers ?? 0) + 1,
          deliveredTo: before?.deliveredTo ?? [],
          hint: params.HE || null,
          endedBy: null,
        };
        this.sessions.set(si, s);
        this.#write(n, "CA", [["TD", "default"], ["CN", route.campaign], ["SI", si], ["YS", randomUUID()]]);
        this.#queue(s);
        return true;
      }
      case "TS": {
        const s = this.#live(n, params.SI);
        // A transfer that crossed a QT: the session is being disconnected already.
        if (s && s.endedBy === "cd" && params.RS !== "0") return true;
        if (!s || s.state !== "transferring") return this.#fail(n, 906, text, "no session being transferred");
        const agent = this.#agents.find((a) => a.busy === s.si);
        if (params.RS === "0") {
          s.state = "delivered";
          if (agent) s.deliveredTo.push(agent.name);
          return true;
        }
        if (agent) agent.busy = null;
        s.agent = null;
        s.state = "queued";
        // The queue timer keeps running; CallGem tries again a little later.
        this.#later(this.o.retryMs ?? 1000, () => this.#distribute());
        return true;
      }
      case "QT": {
        const s = this.#live(n, params.SI);
        if (!s || (s.state !== "queued" && s.state !== "transferring")) return this.#fail(n, 906, text, "no queued session");
        // A QT that crossed our CT: the transfer is off, the station free again.
        const trying = this.#agents.find((a) => a.busy === s.si);
        if (trying) trying.busy = null;
        s.agent = null;
        s.state = "queued";
        const overflow = this.o.queues[s.queue]?.overflow;
        if (overflow) {
          s.queue = overflow;
          this.#queue(s);
        } else {
          s.endedBy = "cd";
          this.#write(n, "CD", [["TD", "default"], ["CN", s.campaign], ["SI", s.si]]);
        }
        return true;
      }
      case "ND": {
        const s = this.#live(n, params.SI);
        if (!s) return this.#fail(n, 906, text, "no live session");
        s.state = "ended";
        s.endedBy = s.endedBy ?? "nd";
        // The station stays allocated until SD: CallGem frees an endpoint only when told.
        return true;
      }
      case "SD": {
        const agent = this.#agents.find((a) => a.endpoint === params.AE && a.connection === n && a.busy !== null);
        if (!agent) return this.#fail(n, 906, text, "no station in use at this endpoint");
        const s = this.sessions.get(agent.busy!);
        if (s && s.state !== "ended") return this.#fail(n, 906, text, "the station's session has not ended");
        agent.busy = null;
        this.#distribute();
        return true;
      }
      default:
        return true;
    }
  }

  #fail(n: number, code: number, text: string, message: string): false {
    this.#error(n, code, text, message);
    return false;
  }

  #live(n: number, si: string | undefined): SimSession | undefined {
    const s = si === undefined ? undefined : this.sessions.get(si);
    return s && s.connection === n && s.state !== "ended" ? s : undefined;
  }

  #queue(s: SimSession): void {
    const q = this.o.queues[s.queue];
    this.#write(s.connection, "TQ", [["CN", s.campaign], ["SI", s.si], ["QT", String(q?.timeoutSeconds ?? 0)], ["GA", s.queue]]);
    this.#distribute();
  }

  #distribute(): void {
    for (const s of this.sessions.values()) {
      if (s.state !== "queued" || !this.#sockets.has(s.connection)) continue;
      const agent = this.#agents.find((a) => a.busy === null && (s.hint ? a.name === s.hint : a.queues.includes(s.queue)));
      if (!agent) continue;
      agent.busy = s.si;
      agent.connection = s.connection;
      s.agent = agent.name;
      s.state = "transferring";
      this.#write(s.connection, "CT", [["TD", "default"], ["CN", s.campaign], ["SI", s.si], ["AN", agent.name], ["AE", agent.endpoint], ["TI", s.si.slice(0, 80)]]);
    }
  }
}
