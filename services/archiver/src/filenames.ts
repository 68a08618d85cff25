/**
 * Attachment names come from senders: they are hostile until proven otherwise. The stored name
 * has no path separators, no control characters, no Windows device names, a bounded length, and
 * is unique within the message; the original name is kept in metadata.
 */
const DEVICE = /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$/i;
const MAX_BYTES = 120;

export function sanitizeFileName(original: string | undefined, index: number, taken: Set<string>): string {
  let name = (original ?? "")
    .normalize("NFC")
    // eslint-disable-next-line no-control-regex -- removing control characters is the point
    .replace(/[\u0000-\u001f\u007f-\u009f]/g, "")
    .replace(/[/\\:*?"<>|]/g, "_")
    .replace(/^[.\s]+/, "")
    .replace(/[.\s]+$/, "")
    .trim();
  if (name === "" || name === "." || name === "..") name = `part-${index}`;
  if (DEVICE.test(name)) name = `_${name}`;
  name = truncateUtf8(name, MAX_BYTES);
  let candidate = name;
  for (let n = 2; taken.has(candidate.toLowerCase()); n++) {
    const dot = name.lastIndexOf(".");
    const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ""];
    candidate = `${truncateUtf8(stem, MAX_BYTES - ext.length - 4)}-${n}${ext}`;
  }
  taken.add(candidate.toLowerCase());
  return candidate;
}

/** Cuts to at most `max` UTF-8 bytes without splitting a character, keeping the extension. */
function truncateUtf8(name: string, max: number): string {
  if (Buffer.byteLength(name) <= max) return name;
  const dot = name.lastIndexOf(".");
  const ext = dot > 0 && name.length - dot <= 10 ? name.slice(dot) : "";
  let stem = ext ? name.slice(0, dot) : name;
  while (Buffer.byteLength(stem + ext) > max) stem = [...stem].slice(0, -1).join("");
  return stem + ext;
}
