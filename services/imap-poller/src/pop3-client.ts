import { connect as netConnect, type Socket } from "node:net";
import { Readable } from "node:stream";
import { connect as tlsConnect, type TLSSocket } from "node:tls";

/** How to reach a POP3 server. */
export interface Pop3ClientOptions {
  host: string;
  port: number;
  /** implicit: TLS from the first byte (995); starttls: STLS after the greeting; none: plain. */
  tls: "implicit" | "starttls" | "none";
  /** Verify the server's certificate (turn off only for tests). */
  rejectUnauthorized?: boolean;
  /** Extra CA certificates to trust (PEM). */
  ca?: string | Buffer;
  /**
   * Deadline for connecting and for every reply; while a message is downloading, the longest
   * silence allowed between two chunks. Default 30 s.
   */
  timeoutMs?: number;
}

/** A POP3 error: the server's "-ERR" text, or a broken/timed-out connection. */
export class Pop3Error extends Error {
  override name = "Pop3Error";
  constructor(
    message: string,
    /** The server's own words after "-ERR", when it answered. */
    readonly responseText: string | undefined,
    /** The command that failed (never its arguments: they may hold a password or token). */
    readonly command: string,
    /** True when the server refused the login (PASS or AUTH). */
    readonly authenticationFailed = false,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** One entry of UIDL: the message number in this session and its unique id. */
export interface Pop3Listing {
  n: number;
  uidl: string;
  size: number;
}

const CRLF = Buffer.from("\r\n");
const LF_DOT = Buffer.from("\n.");
const EMPTY: Buffer = Buffer.alloc(0);

/**
 * Drops the CRLF a POP3 server adds after a message that does not end with a line break. A
 * multi-line reply must end its last line with CRLF before the terminating "." (RFC 1939 §3), so
 * such a message (a cut-off download, say) comes out of RETR two bytes longer than it is; LIST
 * gives its true size (Dovecot: 53 listed, 55 retrieved). When exactly those two extra bytes
 * arrive and they are CRLF, they are the server's and are dropped; otherwise every byte passes.
 * The last two bytes are held back until the end to tell, as views of the input (no copies).
 */
export class ServerLineEnd {
  #held: Buffer[] = [];
  #passed = 0;

  constructor(private readonly listedSize: number | undefined) {}

  /** The parts that can go on now; the final two bytes so far stay held. */
  pass(parts: Buffer[]): Buffer[] {
    if (this.listedSize === undefined) return parts;
    const all = [...this.#held, ...parts];
    this.#held = [];
    let keep = 2;
    let cut = all.length;
    while (cut > 0 && keep > 0) {
      const b = all[cut - 1]!;
      if (b.length <= keep) {
        this.#held.unshift(b);
        keep -= b.length;
        cut--;
      } else {
        this.#held.unshift(b.subarray(b.length - keep));
        all[cut - 1] = b.subarray(0, b.length - keep);
        keep = 0;
      }
    }
    const out = all.slice(0, cut).filter((b) => b.length > 0);
    for (const b of out) this.#passed += b.length;
    return out;
  }

  /** What is left at the end of the reply: the held bytes, unless they are the server's CRLF. */
  end(): Buffer[] {
    const held = Buffer.concat(this.#held);
    this.#held = [];
    if (this.listedSize !== undefined && this.#passed + held.length === this.listedSize + 2 && held.equals(CRLF)) return [];
    return held.length > 0 ? [held] : [];
  }
}

/**
 * Undoes POP3's dot-stuffing on a multi-line reply as it streams in (RFC 1939 §3): a line that
 * starts with "." has one dot removed, and a line of just "." ends the reply. The output parts are
 * views of the input chunks, not copies — a 40 MB message flows through without being copied line
 * by line — and only a dot at a chunk's very end waits for the next chunk to tell what it is.
 */
export class DotUnstuffer {
  #atLineStart = true;
  #carry = EMPTY;

  /** `rest`, once set, is what followed the terminating line (the reply is complete). */
  feed(chunk: Buffer): { parts: Buffer[]; rest?: Buffer } {
    const b = this.#carry.length ? Buffer.concat([this.#carry, chunk]) : chunk;
    this.#carry = EMPTY;
    const parts: Buffer[] = [];
    const emit = (from: number, to: number) => {
      if (to > from) parts.push(b.subarray(from, to));
    };
    const nextDotLine = (from: number) => {
      const i = b.indexOf(LF_DOT, from);
      return i < 0 ? -1 : i + 1;
    };
    let start = 0;
    // p: a line start whose first byte is a dot
    let p = this.#atLineStart && b[0] === 0x2e ? 0 : nextDotLine(0);
    while (p >= 0) {
      if (b.length - p < 3) {
        // "." + CRLF or a stuffed dot? The next chunk tells.
        emit(start, p);
        this.#carry = b.subarray(p);
        this.#atLineStart = true;
        return { parts };
      }
      if (b[p + 1] === 0x0d && b[p + 2] === 0x0a) {
        emit(start, p);
        return { parts, rest: b.subarray(p + 3) };
      }
      emit(start, p);
      start = p + 1; // the stuffed dot is dropped
      p = nextDotLine(p + 1);
    }
    emit(start, b.length);
    this.#atLineStart = b[b.length - 1] === 0x0a;
    return { parts };
  }
}

/**
 * A small POP3 client (RFC 1939, 2449 CAPA, 2595 STLS, AUTH XOAUTH2) written for the poller's
 * needs: UIDL, LIST, RETR as a stream (dot-unstuffed chunk by chunk, so a 40 MB message never sits
 * in memory), DELE and QUIT. One command at a time.
 *
 * node-pop3 was considered: it buffers RETR into a string and has no per-reply deadline, and
 * AUTH XOAUTH2 would have to be sent through its raw command API anyway.
 */
export class Pop3Client {
  #socket: Socket | TLSSocket | undefined;
  #pending: Buffer = Buffer.alloc(0);
  #waiter: (() => void) | undefined;
  #error: Error | undefined;
  #closed = false;
  /** While a RETR streams, raw data goes here instead of the line buffer. */
  #sink: ((chunk: Buffer) => void) | undefined;
  readonly #timeoutMs: number;

  constructor(private readonly o: Pop3ClientOptions) {
    this.#timeoutMs = o.timeoutMs ?? 30_000;
  }

  /** Connects, reads the greeting, and upgrades with STLS when asked to. */
  async connect(): Promise<string> {
    const o = this.o;
    const socket =
      o.tls === "implicit"
        ? tlsConnect({ host: o.host, port: o.port, servername: o.host, rejectUnauthorized: o.rejectUnauthorized ?? true, ...(o.ca ? { ca: o.ca } : {}) })
        : netConnect({ host: o.host, port: o.port });
    this.#attach(socket);
    const greeting = await this.#status("greeting");
    if (o.tls === "starttls") {
      await this.#command("STLS", "STLS");
      this.#socket!.removeAllListeners("data");
      const secure = tlsConnect({ socket: this.#socket!, servername: o.host, rejectUnauthorized: o.rejectUnauthorized ?? true, ...(o.ca ? { ca: o.ca } : {}) });
      this.#attach(secure);
      await new Promise<void>((resolve, reject) => {
        secure.once("secureConnect", resolve);
        secure.once("error", reject);
      });
    }
    return greeting;
  }

  #attach(socket: Socket | TLSSocket): void {
    this.#socket = socket;
    socket.setTimeout(this.#timeoutMs);
    socket.on("timeout", () => socket.destroy(new Pop3Error(`POP3 server ${this.o.host} sent nothing for ${this.#timeoutMs} ms`, undefined, "timeout")));
    socket.on("data", (chunk: Buffer) => {
      if (this.#sink) this.#sink(chunk);
      else {
        this.#pending = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : chunk;
        this.#wake();
      }
    });
    socket.on("error", (e) => {
      this.#error ??= e;
      this.#wake();
    });
    socket.on("close", () => {
      this.#closed = true;
      this.#error ??= new Pop3Error(`POP3 server ${this.o.host} closed the connection`, undefined, "connection");
      this.#wake();
    });
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  async #readLine(): Promise<string> {
    for (;;) {
      const i = this.#pending.indexOf(CRLF);
      if (i >= 0) {
        const line = this.#pending.subarray(0, i).toString("latin1");
        this.#pending = this.#pending.subarray(i + 2);
        return line;
      }
      if (this.#error) throw this.#error;
      if (this.#pending.length > 64 * 1024) throw new Pop3Error("POP3 reply line longer than 64 KB", undefined, "read");
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
  }

  /** Reads a status line; "-ERR" becomes a Pop3Error with the server's text. */
  async #status(command: string, auth = false): Promise<string> {
    const line = await this.#readLine();
    if (line.startsWith("+OK")) return line.slice(3).trim();
    if (line.startsWith("-ERR")) {
      const text = line.slice(4).trim();
      throw new Pop3Error(`POP3 ${command} refused: ${text}`, text, command, auth);
    }
    throw new Pop3Error(`POP3 ${command}: unexpected reply "${line.slice(0, 200)}"`, line, command);
  }

  #write(line: string): void {
    if (!this.#socket || this.#closed) throw this.#error ?? new Pop3Error("not connected", undefined, "write");
    this.#socket.write(`${line}\r\n`);
  }

  async #command(line: string, name: string, auth = false): Promise<string> {
    this.#write(line);
    return this.#status(name, auth);
  }

  /** Lines of a multi-line reply up to the terminating ".", dot-unstuffed. */
  async #lines(): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.#readLine();
      if (line === ".") return lines;
      lines.push(line.startsWith("..") ? line.slice(1) : line);
    }
  }

  /** The server's capabilities (upper case), or [] when CAPA is not supported. */
  async capa(): Promise<string[]> {
    try {
      await this.#command("CAPA", "CAPA");
    } catch (error) {
      if (error instanceof Pop3Error && error.responseText !== undefined) return [];
      throw error;
    }
    return (await this.#lines()).map((l) => l.toUpperCase());
  }

  /** USER/PASS login. */
  async login(user: string, password: string): Promise<void> {
    await this.#command(`USER ${user}`, "USER", true);
    await this.#command(`PASS ${password}`, "PASS", true);
  }

  /** SASL XOAUTH2 (Microsoft 365, Google) with the initial response on the AUTH line. */
  async authXoauth2(user: string, accessToken: string): Promise<void> {
    const ir = Buffer.from(`user=${user}\u0001auth=Bearer ${accessToken}\u0001\u0001`).toString("base64");
    this.#write(`AUTH XOAUTH2 ${ir}`);
    const line = await this.#readLine();
    if (line.startsWith("+OK")) return;
    if (line.startsWith("+")) {
      // A challenge carries the error as base64 JSON; an empty answer makes the server say -ERR.
      const detail = Buffer.from(line.slice(1).trim(), "base64").toString("utf8");
      this.#write("");
      const final = await this.#readLine();
      const text = final.startsWith("-ERR") ? final.slice(4).trim() : final;
      throw new Pop3Error(`POP3 AUTH XOAUTH2 refused: ${text}${detail ? ` (${detail})` : ""}`, text, "AUTH", true);
    }
    const text = line.startsWith("-ERR") ? line.slice(4).trim() : line;
    throw new Pop3Error(`POP3 AUTH XOAUTH2 refused: ${text}`, text, "AUTH", true);
  }

  /** UIDL and LIST together: every message with its number, unique id and size. */
  async listing(): Promise<Pop3Listing[]> {
    await this.#command("UIDL", "UIDL");
    const uidls = new Map<number, string>();
    for (const line of await this.#lines()) {
      const [n, uidl] = line.split(" ");
      if (n && uidl) uidls.set(Number(n), uidl);
    }
    await this.#command("LIST", "LIST");
    const out: Pop3Listing[] = [];
    for (const line of await this.#lines()) {
      const [n, size] = line.split(" ");
      const uidl = uidls.get(Number(n));
      if (uidl !== undefined) out.push({ n: Number(n), uidl, size: Number(size) });
    }
    return out;
  }

  /**
   * RETR as a stream of the message's exact bytes (dot-stuffing removed, the terminating line
   * dropped; with `listedSize`, its LIST size, also the line break the server adds to a message
   * that does not end with one — see ServerLineEnd). Read it to the end before the next command. Back-pressure pauses the socket, so
   * memory stays at a few chunks whatever the message size.
   */
  async retr(n: number, listedSize?: number): Promise<Readable> {
    await this.#command(`RETR ${n}`, "RETR");
    const socket = this.#socket!;
    let carry = this.#pending;
    this.#pending = Buffer.alloc(0);
    let finished = false;
    const out = new Readable({
      read: () => socket.resume(),
      destroy: (error, cb) => {
        this.#sink = undefined;
        if (!finished) socket.destroy(); // the rest of the message is unread: this session is over
        cb(error);
      },
    });
    const unstuff = new DotUnstuffer();
    const tail = new ServerLineEnd(listedSize);
    const feed = (chunk: Buffer) => {
      const r = unstuff.feed(chunk);
      let more = true;
      for (const part of tail.pass(r.parts)) more = out.push(part) && more;
      if (r.rest !== undefined) {
        finished = true;
        this.#sink = undefined;
        socket.resume();
        this.#pending = r.rest;
        for (const part of tail.end()) out.push(part);
        out.push(null);
      } else if (!more) socket.pause();
    };
    this.#sink = feed;
    socket.once("close", () => {
      if (!finished) out.destroy(this.#error ?? new Pop3Error("connection closed during RETR", undefined, "RETR"));
    });
    if (carry.length) {
      const first = carry;
      carry = Buffer.alloc(0);
      feed(first);
    }
    return out;
  }

  /** Marks a message for deletion; the server deletes it only when QUIT succeeds. */
  async dele(n: number): Promise<void> {
    await this.#command(`DELE ${n}`, "DELE");
  }

  /** Ends the session; the server commits DELEs now (UPDATE state). */
  async quit(): Promise<void> {
    await this.#command("QUIT", "QUIT");
    this.#socket?.end();
  }

  /** Drops the connection without QUIT: marked deletions are discarded by the server. */
  close(): void {
    this.#socket?.destroy();
  }
}
