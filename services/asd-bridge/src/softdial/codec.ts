/**
 * SDMP framing for a media-layer client of Softdial CallGem: a two-letter message code, then
 * parameters as `\` + two-letter code + value, the whole frame terminated by NUL. A boolean
 * parameter is its bare code. SDMP 2 may prefix a route (`CG:CT:`); we accept it on input and
 * send plain SDMP 1, which controllers still take.
 *
 * Two ports, two encodings: 6502 carries ASCII, 6500 UTF-16LE without a BOM. On both, a value
 * may not hold `/ \ : * ? " < > | & % + ! ' ;` or a control character, and on 6502 nothing
 * outside printable ASCII. Rather than replace such characters (which loses the sender's
 * address: `o'brien+vip@` is not `o_brien_vip@`), every value is "tilde-escaped": each character
 * that may not travel, and `~` itself, becomes its UTF-8 bytes written `~XX` (upper-case hex).
 * It is percent-encoding with `~` instead of the forbidden `%`, so a desktop or a CallGem script
 * decodes it with `decodeURIComponent(value.replaceAll("~", "%"))` (see `decodeValue`); `~` is
 * printable, allowed by SDMP and valid in an address's local part, so an escaped address is still
 * address-like. A value that does not fit its parameter's length limit after escaping is cut at
 * an escape boundary and ends with "…" (escaped on 6502): never rejected. The exact original is
 * always in the archive, which DT's reference names.
 *
 * The message and parameter sets are data (`SDMP_MESSAGES`, `PARAM_LIMITS`): the public guide
 * lists them only in part, so when a real controller shows more, extend the tables instead of the
 * code. CallGem rejects a whole frame over one unexpected parameter (ER), so `encodeFrame` refuses
 * to build a frame with a parameter the table does not allow, or without a mandatory one, and
 * every frame it builds passes `frameProblems`, the validator tests run on what CallGem received.
 */

export type Direction = "to-callgem" | "from-callgem";

/** The SDMP port's character encoding: 6502 ASCII, 6500 UTF-16LE (no BOM). */
export type SdmpEncoding = "ascii" | "utf16le";

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

/**
 * TK (a token CallGem acknowledges with MV) is on every media-layer message the guide says
 * "most to-CallGem messages" accept; VS is left without, since DA already answers it.
 * MV is not here at all: it flows from CallGem only, and CallGem answers one from us with ER 902.
 */
export const SDMP_MESSAGES: Record<string, MessageSpec> = {
  TO: { name: "Trunks Open", direction: "to-callgem", params: ["IC", "NT", "ND", "SD", "TS", "TK"], required: ["IC"], flags: ["ND", "SD", "TS"] },
  IC: { name: "Inbound Connect", direction: "to-callgem", params: ["TD", "CN", "IC", "SI", "TI", "TN", "DN", "MT", "DT", "HE", "GI", "TK"], required: ["IC"] },
  TS: { name: "Transfer Status", direction: "to-callgem", params: ["CN", "SI", "TI", "AE", "AN", "RS", "TQ", "TK"], required: ["SI", "RS"], flags: ["TQ"] },
  QT: { name: "Queue Timeout", direction: "to-callgem", params: ["CN", "SI", "GA", "TK"], required: ["SI"] },
  ND: { name: "Now Disconnected", direction: "to-callgem", params: ["SI", "CA", "CN", "AE", "TK"], required: ["SI", "CA"] },
  SD: { name: "Station Disconnect", direction: "to-callgem", params: ["CN", "AE", "TK"], required: ["AE"] },
  VS: { name: "Verify Status", direction: "to-callgem", params: ["VI"], required: ["VI"] },
  CA: { name: "Campaign Assignment", direction: "from-callgem", params: ["TD", "CN", "SI", "YS", "TK"], required: [] },
  TQ: { name: "Timeout Queue", direction: "from-callgem", params: ["CN", "SI", "QT", "GA", "TK"], required: [] },
  CT: { name: "Call Transfer", direction: "from-callgem", params: ["TD", "CN", "SI", "AN", "AE", "TI", "A2", "QT", "RI", "TK"], required: ["AE"] },
  CD: { name: "Call Disconnect", direction: "from-callgem", params: ["TD", "CN", "SI", "AN", "AE", "TI", "DA", "TK"], required: [], flags: ["DA"] },
  DA: { name: "Dialer Advise", direction: "from-callgem", params: [], required: [] },
  MV: { name: "Message Verify", direction: "from-callgem", params: ["TK"], required: ["TK"] },
  ER: { name: "Error Report", direction: "from-callgem", params: ["EC", "FM", "MS"], required: [] },
};

/**
 * Length limits of values, from the guide where it states them; the rest are our assumption
 * (generous, so that a real address or subject is not cut). [min, max] characters.
 */
export const PARAM_LIMITS: Record<string, readonly [number, number]> = {
  SI: [1, 120],
  TI: [1, 80],
  TK: [1, 80],
  YS: [20, 50],
  DT: [1, 128_000],
  CA: [1, 3],
  VI: [1, 6],
  NT: [1, 6],
  RS: [1, 1],
};
const DEFAULT_LIMIT: readonly [number, number] = [1, 1000];

export function limitOf(code: string): readonly [number, number] {
  return PARAM_LIMITS[code] ?? DEFAULT_LIMIT;
}

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

/** Characters the protocol forbids inside a value, and our escape character. */
const FORBIDDEN = new Set([..."/\\:*?\"<>|&%+!';~"]);
/** The mark a cut value ends with (before escaping). */
export const CUT_MARK = "…";

function mustEscape(ch: string, encoding: SdmpEncoding): boolean {
  if (FORBIDDEN.has(ch)) return true;
  const cp = ch.codePointAt(0)!;
  if (cp < 0x20 || cp === 0x7f || (cp >= 0x80 && cp <= 0x9f)) return true; // C0, DEL, C1 controls
  if (encoding === "ascii") return cp > 0x7e;
  // UTF-16LE carries the rest; the BOM character is escaped so a value can never start with one.
  return cp === 0xfeff;
}

function escapeChar(ch: string): string {
  let out = "";
  for (const b of Buffer.from(ch, "utf8")) out += `~${b.toString(16).toUpperCase().padStart(2, "0")}`;
  return out;
}

/**
 * Makes any string a valid value for parameter `code` on a port of this encoding: tilde-escaped,
 * and cut with a mark when it would exceed the parameter's limit. Lone surrogates (not text)
 * become U+FFFD first. Returns "" only for "": the caller decides whether to leave the parameter
 * out, since an empty value would read as a flag.
 */
export function encodeValue(value: string, encoding: SdmpEncoding, code = ""): string {
  const max = limitOf(code)[1];
  const pieces: string[] = [];
  let length = 0;
  for (const ch of wellFormed(value)) {
    const piece = mustEscape(ch, encoding) ? escapeChar(ch) : ch;
    pieces.push(piece);
    length += piece.length;
  }
  if (length <= max) return pieces.join("");
  const mark = mustEscape(CUT_MARK, encoding) ? escapeChar(CUT_MARK) : CUT_MARK;
  let out = "";
  for (const piece of pieces) {
    if (out.length + piece.length + mark.length > max) break;
    out += piece;
  }
  return out + mark;
}

/** The string with each lone surrogate (not text; UTF-8 and UTF-16LE cannot carry it) as U+FFFD. */
export function wellFormed(value: string): string {
  return value.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");
}

/** The original text of a tilde-escaped value (what an agent desktop or CallGem script does). */
export function decodeValue(value: string): string {
  try {
    return decodeURIComponent(value.replaceAll("~", "%"));
  } catch {
    return value; // not ours (a controller's own value): shown as received
  }
}

export function param(frame: Frame, code: string): string | undefined {
  const p = frame.params.find(([k]) => k === code);
  return p === undefined ? undefined : p[1] === true ? "" : p[1];
}

export function hasFlag(frame: Frame, code: string): boolean {
  return frame.params.some(([k]) => k === code);
}

export interface EncodeOptions {
  encoding?: SdmpEncoding;
  messages?: Record<string, MessageSpec>;
}

/**
 * Builds the text of a frame (with its NUL), escaping every value; refuses parameters the table
 * does not allow and missing mandatory ones; leaves out an optional parameter whose value is
 * empty (it would read as a flag). The result always passes `frameProblems`.
 */
export function encodeFrame(frame: Frame, options: EncodeOptions | Record<string, MessageSpec> = {}): string {
  const isTable = Object.values(options).some((v) => typeof v === "object" && v !== null && "direction" in v);
  const o: EncodeOptions = isTable ? { messages: options as Record<string, MessageSpec> } : (options as EncodeOptions);
  const messages = o.messages ?? SDMP_MESSAGES;
  const encoding = o.encoding ?? "ascii";
  const spec = messages[frame.code];
  if (!spec) throw new SdmpFrameError(`unknown SDMP message ${frame.code}`);
  if (spec.direction !== "to-callgem") throw new SdmpFrameError(`${frame.code} (${spec.name}) is not sent by the media layer`);
  const parts = [frame.code];
  const present = new Set<string>();
  for (const [k, v] of frame.params) {
    if (!spec.params.includes(k)) throw new SdmpFrameError(`${frame.code} (${spec.name}) does not take parameter ${k}`);
    if (present.has(k)) throw new SdmpFrameError(`${frame.code} parameter ${k} given twice`);
    const isFlag = spec.flags?.includes(k) ?? false;
    if (isFlag) {
      if (v === true) {
        parts.push(k);
        present.add(k);
      }
      continue;
    }
    if (v === true) throw new SdmpFrameError(`${frame.code} parameter ${k} needs a value`);
    const encoded = encodeValue(v, encoding, k);
    if (encoded === "") continue;
    parts.push(k + encoded);
    present.add(k);
  }
  for (const r of spec.required) {
    if (!present.has(r)) throw new SdmpFrameError(`${frame.code} (${spec.name}) needs parameter ${r}`);
  }
  const text = `${parts.join("\\")}\0`;
  const problems = frameProblems(text, encoding, messages);
  if (problems.length) throw new SdmpFrameError(`${frame.code} would be rejected: ${problems.join("; ")}`);
  return text;
}

/**
 * The validator every outgoing frame passes and tests run on what the controller received:
 * exactly one NUL, at the end; a known message sent by the media layer; only its parameters,
 * each once, every mandatory one; flags bare, values non-empty, within their limits, without a
 * forbidden or control character, and on the ASCII port only printable ASCII. [] when valid.
 */
export function frameProblems(text: string, encoding: SdmpEncoding, messages: Record<string, MessageSpec> = SDMP_MESSAGES): string[] {
  const problems: string[] = [];
  if (!text.endsWith("\0")) problems.push("not NUL-terminated");
  const body = text.endsWith("\0") ? text.slice(0, -1) : text;
  if (body.includes("\0")) problems.push("NUL inside the frame");
  const [code = "", ...rest] = body.split("\\");
  const spec = messages[code];
  if (!spec) return [...problems, `unknown message ${JSON.stringify(code)}`];
  if (spec.direction !== "to-callgem") problems.push(`${code} is not sent by the media layer`);
  const seen = new Set<string>();
  for (const p of rest) {
    const k = p.slice(0, 2);
    const v = p.slice(2);
    if (!spec.params.includes(k)) problems.push(`${code} does not take ${JSON.stringify(k)}`);
    if (seen.has(k)) problems.push(`${k} twice`);
    seen.add(k);
    const isFlag = spec.flags?.includes(k) ?? false;
    if (isFlag) {
      if (v !== "") problems.push(`flag ${k} has a value`);
      continue;
    }
    const [min, max] = limitOf(k);
    if (v.length < min || v.length > max) problems.push(`${k} is ${v.length} characters (${min}-${max})`);
    for (const ch of v) {
      if (FORBIDDEN.has(ch) && ch !== "~") problems.push(`${k} holds forbidden ${JSON.stringify(ch)}`);
      else if (ch !== "~" && mustEscape(ch, encoding)) problems.push(`${k} holds U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`);
    }
  }
  for (const r of spec.required) if (!seen.has(r)) problems.push(`${code} lacks ${r}`);
  return problems;
}

/** The bytes of a frame on a port of this encoding. */
export function frameBytes(text: string, encoding: SdmpEncoding): Buffer {
  return Buffer.from(text, encoding === "ascii" ? "latin1" : "utf16le");
}

/**
 * Reads one frame (without its NUL). Lenient on purpose: an unknown message or parameter from
 * the controller is kept, not rejected, so the transcript shows it and the adapter can log it.
 * A value in double quotes (ER's FM carries a whole faulty frame) may contain backslashes.
 * Accepts an SDMP 2 route of one or two segments (`CG:CT:`) and stray line breaks around a frame.
 */
export function decodeFrame(input: string): Frame {
  let rest = input.replace(/^[\r\n\s]+|[\r\n]+$/g, "");
  let route: string | undefined;
  const routed = /^((?:[A-Z0-9]{2}:){1,2})(?=[A-Z]{2}(?:\\|$))/.exec(rest);
  if (routed) {
    route = routed[1]!;
    rest = rest.slice(route.length);
  }
  const code = rest.slice(0, 2);
  if (!/^[A-Z]{2}$/.test(code) || (rest.length > 2 && rest[2] !== "\\")) throw new SdmpFrameError(`not an SDMP frame: ${JSON.stringify(input.slice(0, 80))}`);
  const params: [string, string | true][] = [];
  let i = 3;
  while (i <= rest.length && rest.length > 2) {
    const k = rest.slice(i, i + 2);
    if (k.length < 2) break;
    let j = i + 2;
    let v: string;
    if (rest[j] === '"') {
      // The closing quote is the one followed by the next parameter or the end of the frame.
      const m = /"(?=\\[A-Z0-9]{2}|$)/.exec(rest.slice(j + 1));
      const end = m ? j + 1 + m.index : rest.length;
      v = rest.slice(j + 1, end);
      j = end === rest.length ? rest.length : end + 1;
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

/**
 * Splits a byte stream into NUL-terminated frames, keeping a partial frame (or half a UTF-16
 * code unit) for the next chunk. On UTF-16LE the terminator is the code unit 0x0000, found only
 * at even offsets of a frame, so a NUL byte inside a character is never taken for one.
 */
export class FrameReader {
  #buffer: Buffer = Buffer.alloc(0);
  constructor(private readonly encoding: SdmpEncoding = "ascii") {}

  push(chunk: Buffer | string): string[] {
    const bytes = typeof chunk === "string" ? frameBytes(chunk, this.encoding) : chunk;
    this.#buffer = this.#buffer.length ? Buffer.concat([this.#buffer, bytes]) : bytes;
    const out: string[] = [];
    const step = this.encoding === "ascii" ? 1 : 2;
    let start = 0;
    for (let i = 0; i + step <= this.#buffer.length; i += step) {
      if (this.#buffer[i] !== 0 || (step === 2 && this.#buffer[i + 1] !== 0)) continue;
      const f = this.#buffer.subarray(start, i).toString(this.encoding === "ascii" ? "latin1" : "utf16le");
      if (f.length > 0) out.push(f);
      start = i + step;
    }
    this.#buffer = Buffer.from(this.#buffer.subarray(start));
    return out;
  }
}
