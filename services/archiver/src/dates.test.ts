import assert from "node:assert/strict";
import { test } from "node:test";
import { parseMailDate } from "./dates.js";

// [the Date header as sent, the moment it means (ISO, UTC) or null when it cannot be read]
const cases: [string, string | null][] = [
  ["Tue, 03 Mar 2026 10:15:00 +0100", "2026-03-03T09:15:00.000Z"],
  ["Tue, 3 Mar 2026 10:15:00 -0500", "2026-03-03T15:15:00.000Z"],
  ["3 Mar 2026 10:15 +0000", "2026-03-03T10:15:00.000Z"],
  ["Tue,  3 Mar 2026 10:15:00 +0100 (CET)", "2026-03-03T09:15:00.000Z"],
  ["Tue, 03 Mar 2026 10:15:00 GMT", "2026-03-03T10:15:00.000Z"],
  ["Tue, 03 Mar 2026 10:15:00 EST", "2026-03-03T15:15:00.000Z"],
  ["Tue, 03 Mar 2026 10:15:00 PDT", "2026-03-03T17:15:00.000Z"],
  // Obsolete forms (RFC 5322 §4.3): two- and three-digit years, military zones, comments, folding.
  ["Tue, 03 Mar 26 10:15:00 +0100", "2026-03-03T09:15:00.000Z"],
  ["Wed, 03 Mar 99 10:15:00 +0000", "1999-03-03T10:15:00.000Z"],
  ["Tue, 03 Mar 126 10:15:00 +0000", "2026-03-03T10:15:00.000Z"],
  ["Tue, 03 Mar 2026 10:15:00 Z", "2026-03-03T10:15:00.000Z"],
  ["Tue, 03 Mar 2026 10:15:00 A", "2026-03-03T10:15:00.000Z"],
  ["Tue (a comment), 03 (another) Mar 2026 10:15:00 +0100", "2026-03-03T09:15:00.000Z"],
  ["Tue, 03 Mar 2026\r\n 10:15:00 +0100", "2026-03-03T09:15:00.000Z"],
  // Broken forms seen in the wild.
  ["Tue 03 Mar 2026 10:15:00 +0100", "2026-03-03T09:15:00.000Z"],
  ["Tuesday, 03 March 2026 10:15:00 +0100", "2026-03-03T09:15:00.000Z"],
  ["Tue, 03 Mar 2026 10:15:00 +01:00", "2026-03-03T09:15:00.000Z"],
  ["Tue, 03 Mar 2026 10:15:00 GMT+0100", "2026-03-03T09:15:00.000Z"],
  ["Tue Mar 03 2026 10:15:00 GMT+0100 (Central European Standard Time)", "2026-03-03T09:15:00.000Z"],
  ["Tue Mar  3 10:15:00 2026", "2026-03-03T10:15:00.000Z"],
  ["2026-03-03T10:15:00+01:00", "2026-03-03T09:15:00.000Z"],
  ["2026-03-03 10:15:00", "2026-03-03T10:15:00.000Z"],
  ["2026-03-03T10:15:00.123Z", "2026-03-03T10:15:00.000Z"],
  ["03.03.2026 10:15:00 +0100", "2026-03-03T09:15:00.000Z"],
  ["04/03/2026 10:15 +0100", "2026-03-04T09:15:00.000Z"],
  ["Di, 03 Mär 2026 10:15:00 +0100", null],
  ["03 Dez 2026 10:15:00 +0100", "2026-12-03T09:15:00.000Z"],
  ["Tue, 03-Mar-2026 10:15:00 +0100", "2026-03-03T09:15:00.000Z"],
  ["Tue, 03 Mar 2026 10:15:00", "2026-03-03T10:15:00.000Z"],
  ["Tue, 03 Mar 2026 10:15:00 CEST", "2026-03-03T08:15:00.000Z"],
  ["Tue, 03 Mar 2026", "2026-03-03T00:00:00.000Z"],
  // Unreadable: null, never "now".
  ["yesterday at noon, more or less", null],
  ["", null],
  ["   ", null],
  ["Tue, 31 Feb 2026 10:15:00 +0100", null],
  ["Tue, 03 Mar 2026 25:15:00 +0100", null],
  ["Tue, 03 Mar 2026 10:15:00 +2500", null],
  ["03 Foo 2026 10:15:00", null],
  ["1709460900", null],
  ["soon", null],
  ["Mar 2026", null],
  ["Tue, 03 Mar 1066 10:15:00 +0000", null],
];

test(`Date headers are read leniently (${cases.length} forms), and an unreadable one is null, never the time of parsing`, () => {
  const wrong: string[] = [];
  for (const [raw, want] of cases) {
    const got = parseMailDate(raw)?.toISOString() ?? null;
    if (got !== want) wrong.push(`${JSON.stringify(raw)}: got ${got}, want ${want}`);
  }
  assert.deepEqual(wrong, []);
  assert.equal(parseMailDate(null), null);
  assert.equal(parseMailDate(undefined), null);
});
