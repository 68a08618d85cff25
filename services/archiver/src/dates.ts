/**
 * Reads a Date header the way mail is actually written: RFC 5322 (§3.3), its obsolete forms
 * (§4.3: two- and three-digit years, zone names, military zones, comments and extra whitespace
 * anywhere) and the broken forms common clients and scripts produce (ISO 8601, JavaScript's
 * `Date.toString()`, asctime, `GMT+0100`, `+01:00`, dotted or slashed day.month.year, full month
 * names, no comma). What cannot be read is `null` — never "now": a reader then shows and orders
 * by the time the mailbox received the message and says so (issue 11: mailparser replaced an
 * unreadable Date with the time of parsing, and agents saw it as the customer's date).
 *
 * Rejected: handing the text to `new Date(text)`. V8 accepts "yesterday 12" style garbage in
 * some forms, reads "01/02/2026" as January 2nd, and its result depends on the process time zone.
 */

const MONTHS: Record<string, number> = {
  jan: 0, feb: 1, mar: 2, apr: 3, may: 4, jun: 5, jul: 6, aug: 7, sep: 8, oct: 9, nov: 10, dec: 11,
  // Common non-English abbreviations (German, French, Spanish, Dutch, Italian) seen in broken Date headers.
  mrz: 2, mär: 2, mai: 4, okt: 9, dez: 11, janv: 0, févr: 1, fevr: 1, avr: 3, juin: 5, juil: 6, août: 7, aout: 7, déc: 11,
  ene: 0, abr: 3, ago: 7, dic: 11, mrt: 2, mei: 4, gen: 0, mag: 4, giu: 5, lug: 6, set: 8, ott: 9,
};

/** RFC 5322 §4.3 zone names, in minutes east of UTC. Military letters are unreliable (§4.3): -0000, i.e. UTC. */
const ZONES: Record<string, number> = {
  ut: 0, utc: 0, gmt: 0, z: 0, est: -300, edt: -240, cst: -360, cdt: -300, mst: -420, mdt: -360, pst: -480, pdt: -420,
  // Not in the RFC, but frequent.
  cet: 60, cest: 120, met: 60, mest: 120, bst: 60, eet: 120, eest: 180, wet: 0, west: 60, ist: 330, jst: 540, kst: 540, hkt: 480, aest: 600, aedt: 660,
};

const DAY_NAMES = /^(mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,?$/i;

/** The moment a Date header names, or null when it cannot be read with confidence. */
export function parseMailDate(raw: string | null | undefined): Date | null {
  if (raw === null || raw === undefined) return null;
  const text = removeComments(raw.replace(/\r?\n[ \t]+/g, " ")).trim();
  if (text === "") return null;
  return iso(text) ?? rfc(text);
}

/** 2026-03-03T10:15:00+01:00, 2026-03-03 10:15:00Z, 2026-03-03 10:15 +0100 */
function iso(text: string): Date | null {
  const m = /^(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ]+(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?)?\s*(Z|[+-]\d{2}:?\d{2}|[A-Za-z]{1,5})?$/.exec(text);
  if (!m) return null;
  const zone = m[7] === undefined ? 0 : zoneMinutes(m[7]);
  if (zone === undefined) return null;
  return build(+m[1]!, +m[2]! - 1, +m[3]!, +(m[4] ?? 0), +(m[5] ?? 0), +(m[6] ?? 0), zone);
}

/** RFC 5322 and its relatives: tokens in a forgiving order. */
function rfc(text: string): Date | null {
  const tokens = text.replace(/,/g, " ").split(/\s+/).filter((t) => t !== "" && !DAY_NAMES.test(t));
  let day: number | undefined;
  let month: number | undefined;
  let year: number | undefined;
  let time: [number, number, number] | undefined;
  let zone: number | undefined;
  for (const raw of tokens) {
    const t = raw.toLowerCase().replace(/\.$/, "");
    let m: RegExpExecArray | null;
    if ((m = /^(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?$/.exec(t)) && time === undefined) {
      time = [+m[1]!, +m[2]!, +(m[3] ?? 0)];
    } else if ((m = /^(\d{1,2})[./](\d{1,2})[./](\d{2,4})$/.exec(t)) && day === undefined) {
      // Day first, as everywhere but the US writes it in mail; 03.04.2026 is the 3rd of April.
      day = +m[1]!;
      month = +m[2]! - 1;
      year = fullYear(m[3]!);
    } else if ((m = /^(\d{1,2})-([a-zäéû]{3,9})-(\d{2,4})$/.exec(t)) && day === undefined && monthOf(m[2]!) !== undefined) {
      day = +m[1]!;
      month = monthOf(m[2]!);
      year = fullYear(m[3]!);
    } else if (/^[a-zäéû]{3,9}$/.test(t) && month === undefined && monthOf(t) !== undefined) {
      month = monthOf(t);
    } else if ((m = /^(?:gmt|utc|ut)?([+-])(\d{1,2}):?(\d{2})?$/.exec(t)) && zone === undefined && (time !== undefined || t.startsWith("g") || t.startsWith("u"))) {
      zone = (m[1] === "-" ? -1 : 1) * (+m[2]! * 60 + +(m[3] ?? 0));
    } else if (/^[a-z]{1,5}$/.test(t) && zone === undefined && zoneMinutes(t) !== undefined) {
      zone = zoneMinutes(t);
    } else if (/^\d{1,2}$/.test(t) && day === undefined) {
      day = +t;
    } else if (/^\d{2,4}$/.test(t) && year === undefined) {
      year = fullYear(t);
    } else {
      return null; // a word we do not know: better no date than a wrong one
    }
  }
  if (day === undefined || month === undefined || year === undefined) return null;
  const [h, mi, s] = time ?? [0, 0, 0];
  return build(year, month, day, h, mi, s, zone ?? 0);
}

function build(year: number, month: number, day: number, h: number, mi: number, s: number, zoneMinutesEast: number): Date | null {
  if (year < 1970 || year > 2200 || month < 0 || month > 11 || day < 1 || day > 31 || h > 24 || mi > 59 || s > 60) return null;
  if (Math.abs(zoneMinutesEast) > 14 * 60) return null;
  const utc = Date.UTC(year, month, day, h, mi, Math.min(s, 59)) - zoneMinutesEast * 60_000;
  const check = new Date(Date.UTC(year, month, day));
  if (check.getUTCDate() !== day) return null; // 31 February
  return new Date(utc);
}

function fullYear(t: string): number {
  const n = +t;
  // RFC 5322 §4.3: two digits are 1950–2049; three digits add 1900.
  if (t.length === 2) return n < 50 ? 2000 + n : 1900 + n;
  if (t.length === 3) return 1900 + n;
  return n;
}

function monthOf(t: string): number | undefined {
  const key = t.toLowerCase();
  return MONTHS[key] ?? MONTHS[key.slice(0, 4)] ?? MONTHS[key.slice(0, 3)];
}

function zoneMinutes(t: string): number | undefined {
  const m = /^([+-])(\d{2}):?(\d{2})$/.exec(t);
  if (m) return (m[1] === "-" ? -1 : 1) * (+m[2]! * 60 + +m[3]!);
  const key = t.toLowerCase();
  if (key in ZONES) return ZONES[key];
  if (/^[a-ik-z]$/.test(key)) return 0;
  return undefined;
}

function removeComments(s: string): string {
  let out = "";
  let depth = 0;
  for (const c of s) {
    if (c === "(") depth++;
    else if (c === ")" && depth > 0) depth--;
    else if (depth === 0) out += c;
  }
  return out;
}
