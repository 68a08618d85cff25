/**
 * Subjects and sender addresses in twelve scripts, mixed with the characters that break
 * protocols (SDMP's forbidden set, NUL and other controls, line breaks, a BOM, bidi overrides,
 * combining marks), for tests that text in any language travels intact. Deterministic per seed.
 */

/** Words per script: Latin with diacritics, Cyrillic, Greek, Arabic, Hebrew, Chinese, Japanese, Korean, Devanagari, Thai, Georgian, emoji. */
export const SCRIPTS: Record<string, readonly string[]> = {
  latin: ["Café", "über", "Straße", "façade", "niño", "Ångström", "łódź", "Øresund", "crème brûlée"],
  cyrillic: ["Привет", "заказ", "возврат", "Щука", "счёт"],
  greek: ["Καλημέρα", "παραγγελία", "Ωμέγα", "ψυχή"],
  arabic: ["مرحبا", "طلب", "استرداد", "شكرا"],
  hebrew: ["שלום", "הזמנה", "תודה", "החזר"],
  chinese: ["你好", "订单", "退款", "客服中心"],
  japanese: ["こんにちは", "注文", "返品について", "カタカナ"],
  korean: ["안녕하세요", "주문", "환불"],
  devanagari: ["नमस्ते", "आदेश", "धन्यवाद"],
  thai: ["สวัสดี", "คำสั่งซื้อ", "ขอบคุณ"],
  georgian: ["გამარჯობა", "შეკვეთა"],
  emoji: ["😀", "👍🏽", "👨‍👩‍👧", "🇯🇵", "📦", "❤️"],
};

/** Characters that must be escaped on the wire, or that break framing, display or parsing. */
export const HOSTILE = ["/", "\\", ":", "*", "?", '"', "<", ">", "|", "&", "%", "+", "!", "'", ";", "~", "\u0000", "\u0007", "\r\n", "\t", "\ufeff", "\u202e", "\u0301", "\u0085", "\\\\SIx"];

/** A small seeded generator (mulberry32) in [0, 1), so a failing case can be replayed from its seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` emails; the i-th uses script i mod 12 (so every script appears), with hostile characters mixed in. */
export function scriptedMail(n: number, seed = 1): { script: string; subject: string; from: string }[] {
  const next = seededRandom(seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)]!;
  const names = Object.keys(SCRIPTS);
  return Array.from({ length: n }, (_, i) => {
    const script = names[i % names.length]!;
    const words = SCRIPTS[script]!;
    const subject = [pick(words), pick(HOSTILE), pick(words), pick(SCRIPTS.latin!), pick(HOSTILE), `#${i}`, pick(words)].join(i % 3 === 0 ? "" : " ");
    const local = i % 4 === 0 ? "o'brien+vip" : i % 4 === 1 ? `${pick(words)}.${i}` : i % 4 === 2 ? `a&b!c%${i}` : `"quoted;${i}"`;
    return { script, subject, from: `${local}@${i % 5 === 0 ? `${pick(words)}.example` : "customer.example"}` };
  });
}
