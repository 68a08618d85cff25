import { randomUUID } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";

/**
 * A stand-in for Softdial CallGem's controller, written from Sytel's public SDMP description
 * (see /work/shared/reference/softdial-sdmp.md), for tests of a media-layer client. It listens on
 * 127.0.0.1, speaks NUL-terminated SDMP 1 frames, and records every frame in both directions so a
 * test can assert what CallGem saw, not only what Postroom believes it sent.
 *
 * What it plays: VS → DA every interval; TO declares the switch; IC is routed by its DN to a
 * campaign and queue (CA, then TQ with the queue's timer); a free agent logged in to the queue
 * gets CT; TS RS0 makes the session delivered; QT moves it to the queue's overflow (a new TQ) or,
 * without one, ends it with CD; ND ends it; SD frees the endpoint. A frame it cannot accept gets
 * ER with the faulty frame in FM. When the socket closes, every session bound to it is dropped,
 * as CallGem does. It does not check protocol details the public guide leaves open.
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
}

interface SimAgent {
  name: string;
  endpoint: string;
  queues: string[];
  busy: string | null;
}

const ACCEPTS = ["VS", "TO", "IC", "TS", "QT", "ND", "SD", "MV"];
const IC_PARAMS = ["TD", "CN", "IC", "SI", "TI", "TN", "DN", "MT", "DT", "HE", "GI"];

function parse(text: string): { code: string; params: Record<string, string> } {
  const [code = "", ...rest] = text.split("\\");
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
  #server: Server | undefined;
  #connections = 0;
  port = 0;

  constructor(private readonly o: SoftdialSimulatorOptions) {}

  static async start(o: SoftdialSimulatorOptions): Promise<SoftdialSimulator> {
    const sim = new SoftdialSimulator(o);
    await sim.#listen();
    return sim;
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

  /** An agent logs in; a queued session of one of its queues is transferred to it right away. */
  loginAgent(name: string, queues: string[], endpoint = `ext-${name}`): void {
    this.#agents.push({ name, endpoint, queues, busy: null });
    this.#distribute();
  }

  /** CallGem ends a delivered session (as when the agent wraps up in Softdial). */
  disconnect(si: string): void {
    const s = this.sessions.get(si);
    const socket = s && this.#sockets.get(s.connection);
    if (!s || !socket) throw new Error(`no live session ${si}`);
    const agent = this.#agents.find((a) => a.busy === si);
    this.#write(s.connection, "CD", [["TD", "default"], ["CN", s.campaign], ["SI", si], ...(agent ? ([["AN", agent.name], ["AE", agent.endpoint]] as [string, string][]) : [])]);
  }

  /** Sends raw bytes (for tests of how the client treats odd input). */
  sendRaw(text: string): void {
    for (const [n, socket] of this.#sockets) {
      this.#record(n, "out", text);
      socket.write(`${text}\0`, "latin1");
    }
  }

  /** Cuts every connection, as a network failure or a controller restart would. */
  dropConnections(): void {
    for (const socket of this.#sockets.values()) socket.destroy();
  }

  async stop(): Promise<void> {
    this.dropConnections();
    for (const t of this.#heartbeats.values()) clearInterval(t);
    await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()));
  }

  #accept(socket: Socket): void {
    const n = ++this.#connections;
    this.#sockets.set(n, socket);
    socket.setEncoding("latin1");
    let buffer = "";
    socket.on("data", (chunk: string) => {
      buffer += chunk;
      let at: number;
      while ((at = buffer.indexOf("\0")) !== -1) {
        const text = buffer.slice(0, at);
        buffer = buffer.slice(at + 1);
        if (text) this.#onFrame(n, text);
      }
    });
    socket.on("error", () => undefined);
    socket.on("close", () => {
      this.#sockets.delete(n);
      clearInterval(this.#heartbeats.get(n));
      this.#heartbeats.delete(n);
      // Resources belong to the socket that declared them.
      for (const s of this.sessions.values()) {
        if (s.connection !== n || s.state === "ended") continue;
        s.state = "ended";
        const agent = this.#agents.find((a) => a.busy === s.si);
        if (agent) agent.busy = null;
      }
    });
  }

  #record(connection: number, direction: "in" | "out", text: string): void {
    this.frames.push({ connection, direction, at: Date.now(), text, ...parse(text) });
  }

  #write(connection: number, code: string, params: [string, string][]): void {
    const text = [code, ...params.map(([k, v]) => k + v)].join("\\");
    this.#record(connection, "out", text);
    this.#sockets.get(connection)?.write(`${text}\0`, "latin1");
  }

  #error(connection: number, code: number, faulty: string, message: string): void {
    this.#write(connection, "ER", [["EC", String(code)], ["FM", `"${faulty}"`], ["MS", message]]);
  }

  #onFrame(n: number, text: string): void {
    this.#record(n, "in", text);
    const { code, params } = parse(text);
    if (!(this.o.accepts ?? ACCEPTS).includes(code)) return this.#error(n, 1, text, `unknown message ${code}`);
    switch (code) {
      case "VS": {
        clearInterval(this.#heartbeats.get(n));
        const seconds = Number(params.VI ?? "0");
        if (seconds > 0) {
          this.#write(n, "DA", []);
          this.#heartbeats.set(n, setInterval(() => this.#write(n, "DA", []), seconds * 1000));
        }
        return;
      }
      case "TO":
        if (!params.IC) return this.#error(n, 2, text, "TO needs the switch id (IC)");
        return;
      case "IC": {
        if (!params.IC) return this.#error(n, 2, text, "IC needs the switch id (IC)");
        // CallGem rejects the whole message for one parameter it does not know.
        const unknown = Object.keys(params).find((k) => !IC_PARAMS.includes(k));
        if (unknown) return this.#error(n, 2, text, `redundant parameter ${unknown}`);
        if (params.SI !== undefined && (params.SI.length < 1 || params.SI.length > 120)) return this.#error(n, 2, text, "SI must be 1-120 characters");
        if (!params.SI && !params.TN) return this.#error(n, 120, text, "no SI and no TN");
        const route = this.o.routes.find((r) => r.dn === params.DN);
        if (!route) return this.#error(n, 30, text, "no campaign for this destination");
        const si = params.SI ?? randomUUID();
        const before = this.sessions.get(si);
        if (before && before.state !== "ended") return this.#error(n, 3, text, "session already exists");
        const s: SimSession = { si, connection: n, campaign: route.campaign, queue: route.queue, state: "queued", agent: null, offers: (before?.offers ?? 0) + 1 };
        this.sessions.set(si, s);
        this.#write(n, "CA", [["TD", "default"], ["CN", route.campaign], ["SI", si], ["YS", randomUUID()]]);
        this.#queue(s);
        return;
      }
      case "TS": {
        const s = params.SI ? this.sessions.get(params.SI) : undefined;
        if (!s) return this.#error(n, 4, text, "unknown session");
        if (params.RS === "0") s.state = "delivered";
        else {
          const agent = this.#agents.find((a) => a.busy === s.si);
          if (agent) agent.busy = null;
          s.agent = null;
          s.state = "queued";
        }
        return;
      }
      case "QT": {
        const s = params.SI ? this.sessions.get(params.SI) : undefined;
        if (!s || s.state !== "queued") return this.#error(n, 4, text, "no queued session");
        const overflow = this.o.queues[s.queue]?.overflow;
        if (overflow) {
          s.queue = overflow;
          this.#queue(s);
        } else {
          this.#write(n, "CD", [["TD", "default"], ["CN", s.campaign], ["SI", s.si]]);
        }
        return;
      }
      case "ND": {
        const s = params.SI ? this.sessions.get(params.SI) : undefined;
        if (!s) return this.#error(n, 4, text, "unknown session");
        if (params.CA === undefined) return this.#error(n, 2, text, "ND needs a cause (CA)");
        s.state = "ended";
        return;
      }
      case "SD": {
        const agent = this.#agents.find((a) => a.endpoint === params.AE);
        if (agent) agent.busy = null;
        this.#distribute();
        return;
      }
      default:
        return;
    }
  }

  #queue(s: SimSession): void {
    const q = this.o.queues[s.queue];
    this.#write(s.connection, "TQ", [["CN", s.campaign], ["SI", s.si], ["QT", String(q?.timeoutSeconds ?? 0)], ["GA", s.queue]]);
    this.#distribute();
  }

  #distribute(): void {
    for (const s of this.sessions.values()) {
      if (s.state !== "queued") continue;
      const agent = this.#agents.find((a) => a.busy === null && a.queues.includes(s.queue));
      if (!agent) continue;
      agent.busy = s.si;
      s.agent = agent.name;
      s.state = "transferring";
      this.#write(s.connection, "CT", [["TD", "default"], ["CN", s.campaign], ["SI", s.si], ["AN", agent.name], ["AE", agent.endpoint], ["TI", s.si.slice(0, 80)]]);
    }
  }
}
