export { Archiver } from "./archiver.js";
export type { ArchiverOptions } from "./archiver.js";
export { sanitizeFileName } from "./filenames.js";
export { detectAutomatic } from "./automatic.js";
export { messageFolder } from "./disk.js";
