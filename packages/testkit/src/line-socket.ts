import { connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";

/** Options for {@link LineSocket.connect}. */
export interface LineSocketOptions {
  /** Use implicit TLS. */
  tls?: boolean;
  /** PEM CA to trust with `tls` (e.g. Dovecot's `caCertPath` content). */
  ca?: string;
  /** Per-read deadline (default 5 s). */
  timeoutMs?: number;
}

/**
 * A line-oriented TCP client for speaking POP3, SMTP or LMTP by hand in tests, where a protocol
 * library would hide exactly what the test wants to see (greetings, reply codes, dot-stuffing).
 */
export class LineSocket {
  private readonly socket: Socket;
  private readonly timeoutMs: number;
  private buffer = "";
  private readonly waiting: Array<() => void> = [];
  private closed = false;
  private error: Error | undefined;

  private constructor(socket: Socket, timeoutMs: number) {
    this.socket = socket;
    this.timeoutMs = timeoutMs;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.buffer += chunk;
      this.wake();
    });
    socket.on("error", (error) => {
      this.error = error;
      this.wake();
    });
    socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
  }

  /** Connects and resolves once the TCP (and TLS) handshake is done. */
  static connect(host: string, port: number, options: LineSocketOptions = {}): Promise<LineSocket> {
    const timeoutMs = options.timeoutMs ?? 5_000;
    return new Promise((resolve, reject) => {
      const socket =
        options.tls === true
          ? tlsConnect({ host, port, servername: "localhost", ...(options.ca === undefined ? {} : { ca: options.ca }) })
          : netConnect({ host, port });
      const ready = options.tls === true ? "secureConnect" : "connect";
      socket.once(ready, () => {
        socket.off("error", reject);
        resolve(new LineSocket(socket, timeoutMs));
      });
      socket.once("error", reject);
    });
  }

  private wake(): void {
    for (const fn of this.waiting.splice(0)) fn();
  }

  /** The next line, without its CRLF. */
  async readLine(): Promise<string> {
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const end = this.buffer.indexOf("\n");
      if (end >= 0) {
        const line = this.buffer.slice(0, end).replace(/\r$/, "");
        this.buffer = this.buffer.slice(end + 1);
        return line;
      }
      if (this.error !== undefined) throw this.error;
      if (this.closed) throw new Error(`connection closed; unread: ${JSON.stringify(this.buffer)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no line within ${this.timeoutMs} ms; unread: ${JSON.stringify(this.buffer)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiting.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Reads an SMTP/LMTP reply (all `250-` continuation lines up to the final `250 `); returns every line. */
  async readReply(): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.readLine();
      lines.push(line);
      if (!/^\d{3}-/.test(line)) return lines;
    }
  }

  /** Reads lines up to a line that is exactly "." (POP3 multi-line answers); returns them without it. */
  async readUntilDot(): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.readLine();
      if (line === ".") return lines;
      lines.push(line);
    }
  }

  /** Sends a line (CRLF appended). */
  send(line: string): void {
    this.socket.write(`${line}\r\n`);
  }

  /** Sends `line` and returns the next line. */
  async command(line: string): Promise<string> {
    this.send(line);
    return this.readLine();
  }

  /** Closes the connection. */
  close(): void {
    this.socket.destroy();
  }
}
