/**
 * SDMP framing for a media-layer client of Softdial CallGem: a two-letter message code, then
 * parameters as `\` + two-letter code + value, the whole frame terminated by NUL. A boolean
 * parameter is its bare code. SDMP 2 may prefix a route (`CG:CT:`); we accept it on input and
 * send plain SDMP 1, which controllers still take.
 *
 * The message and parameter sets are data (`SDMP_MESSAGES`): the public guide lists them only in
 * part, so when a real controller shows more, extend the table instead of the code. CallGem
 * rejects a whole frame over one unexpected parameter (ER), so `encodeFrame` refuses to build a
 * frame with a parameter the table does not allow, or without a mandatory one.
 */

export type Direction = "to-callgem" | "from-callgem";

export interface MessageSpec {
  /** Human name, for transcripts and errors. */
  name: string;
  direction: Direction;
  /** Parameters we may send or expect. */
  params: readonly string[];
  /** Parameters that must be present. */
  required: readonly string[];
  /** Parameters that are flags (present = true, no value). */
  flags?: readonly string[];
}

export const SDMP_MESSAGES: Record<string, MessageSpec> = {
  TO: { name: "Trunks Open", direction: "to-callgem", params: ["IC", "NT", "ND", "SD", "TS"], required: ["IC"], flags: ["ND", "SD", "TS"] },
  IC: { name: "Inbound Connect", direction: "to-callgem", params: ["TD", "CN", "IC", "SI", "TI", "TN", "DN", "MT", "DT", "HE", "GI"], required: ["IC"] },
  TS: { name: "Transfer Status", direction: "to-callgem", params: ["CN", "SI", "TI", "AE", "AN", "RS", "TQ"], required: ["SI", "RS"], flags: ["TQ"] },
  QT: { name: "Queue Timeout", direction: "to-callgem", params: ["CN", "SI", "GA"], required: ["SI"] },
  ND: { name: "Now Disconnected", direction: "to-callgem", params: ["SI", "CA", "CN", "AE"], required: ["SI", "CA"] },
  SD: { name: "Station Disconnect", direction: "to-callgem", params: ["CN", "AE"], required: ["AE"] },
  VS: { name: "Verify Status", direction: "to-callgem", params: ["VI"], required: ["VI"] },
  MV: { name: "Message Verify", direction: "to-callgem", params: ["TK"], required: ["TK"] },
  CA: { name: "Campaign Assignment", direction: "from-callgem", params: ["TD", "CN", "SI", "YS", "TK"], required: [] },
  TQ: { name: "Timeout Queue", direction: "from-callgem", params: ["CN", "SI", "QT", "GA", "TK"], required: [] },
  CT: { name: "Call Transfer", direction: "from-callgem", params: ["TD", "CN", "SI", "AN", "AE", "TI", "A2", "QT", "RI", "TK"], required: ["AE"] },
  CD: { name: "Call Disconnect", direction: "from-callgem", params: ["TD", "CN", "SI", "AN", "AE", "TI", "DA", "TK"], required: [], flags: ["DA"] },
  DA: { name: "Dialer Advise", direction: "from-callgem", params: [], required: [] },
  ER: { name: "Error Report", direction: "from-callgem", params: ["EC", "FM", "MS"], required: [] },
};

/** One SDMP message: its code and parameters in order (`true` for a flag). */
export interface Frame {
  code: string;
  params: [string, string | true][];
  /** The SDMP 2 route prefix as received (e.g. `CG:CT:`), if any. */
  route?: string;
}

/** A frame we refuse to send, or could not read. */
export class SdmpFrameError extends Error {
  override name = "SdmpFrameError";
}

/** Characters the protocol forbids inside a value (plus NUL and line breaks, which would break framing). */
// eslint-disable-next-line no-control-regex -- NUL and CR/LF are exactly what must not reach the wire
const FORBIDDEN = /[/\\:*?"<>|&%+!';\u0000\r\n]/g;

/** Makes a user-supplied value safe for a parameter: each forbidden character becomes "_". */
export function sanitizeValue(value: string, max = 128_000): string {
  return value.replace(FORBIDDEN, "_").slice(0, max);
}

export function param(frame: Frame, code: string): string | undefined {
  const p = frame.params.find(([k]) => k === code);
  return p === undefined ? undefined : p[1] === true ? "" : p[1];
}

export function hasFlag(frame: Frame, code: string): boolean {
  return frame.params.some(([k]) => k === code);
}

/** Builds the bytes of a frame, sanitizing every value; refuses parameters the table does not allow. */
export function encodeFrame(frame: Frame, messages: Record<string, MessageSpec> = SDMP_MESSAGES): string {
  const spec = messages[frame.code];
  if (!spec) throw new SdmpFrameError(`unknown SDMP message ${frame.code}`);
  const parts = [frame.code];
  for (const [k, v] of frame.params) {
    if (!spec.params.includes(k)) throw new SdmpFrameError(`${frame.code} (${spec.name}) does not take parameter ${k}`);
    const isFlag = spec.flags?.includes(k) ?? false;
    if (isFlag) {
      if (v === true) parts.push(k);
      continue;
    }
    if (v === true) throw new SdmpFrameError(`${frame.code} parameter ${k} needs a value`);
    parts.push(k + sanitizeValue(v));
  }
  for (const r of spec.required) {
    if (!frame.params.some(([k]) => k === r)) throw new SdmpFrameError(`${frame.code} (${spec.name}) needs parameter ${r}`);
  }
  return `${parts.join("\\")}\0`;
}

/**
 * Reads one frame (without its NUL). Lenient on purpose: an unknown message or parameter from
 * the controller is kept, not rejected, so the transcript shows it and the adapter can log it.
 * A value in double quotes (ER's FM carries a whole faulty frame) may contain backslashes.
 */
export function decodeFrame(text: string): Frame {
  let rest = text;
  let route: string | undefined;
  const routed = /^((?:[A-Z]{2}:){2})/.exec(rest);
  if (routed) {
    route = routed[1]!;
    rest = rest.slice(route.length);
  }
  const code = rest.slice(0, 2);
  if (!/^[A-Z]{2}$/.test(code) || (rest.length > 2 && rest[2] !== "\\")) throw new SdmpFrameError(`not an SDMP frame: ${JSON.stringify(text.slice(0, 80))}`);
  const params: [string, string | true][] = [];
  let i = 3;
  while (i <= rest.length && rest.length > 2) {
    const k = rest.slice(i, i + 2);
    if (k.length < 2) break;
    let j = i + 2;
    let v: string;
    if (rest[j] === '"') {
      const close = rest.indexOf('"', j + 1);
      const end = close === -1 ? rest.length : close;
      v = rest.slice(j + 1, end);
      j = close === -1 ? rest.length : close + 1;
      const next = rest.indexOf("\\", j);
      j = next === -1 ? rest.length : next;
    } else {
      const next = rest.indexOf("\\", j);
      const end = next === -1 ? rest.length : next;
      v = rest.slice(j, end);
      j = end;
    }
    params.push([k, v === "" ? true : v]);
    i = j + 1;
  }
  return route === undefined ? { code, params } : { code, params, route };
}

/** Splits a byte stream into NUL-terminated frames, keeping a partial frame for the next chunk. */
export class FrameReader {
  #buffer = "";
  push(chunk: string): string[] {
    this.#buffer += chunk;
    const out: string[] = [];
    let at: number;
    while ((at = this.#buffer.indexOf("\0")) !== -1) {
      const f = this.#buffer.slice(0, at);
      this.#buffer = this.#buffer.slice(at + 1);
      if (f.length > 0) out.push(f);
    }
    return out;
  }
}
