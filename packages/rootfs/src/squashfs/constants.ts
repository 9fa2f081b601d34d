// squashfs 4.0 on-disk constants. Reference: the Linux kernel's Documentation/filesystems/squashfs.rst
// and fs/squashfs/squashfs_fs.h (format only; no code is taken from any implementation).

/** "hsqs" read as a little-endian u32. Superblock section. */
export const MAGIC = 0x73717368;
/** Superblock size in bytes. */
export const SUPERBLOCK_BYTES = 96;
/** Uncompressed size of one metadata block (inode/directory/fragment/id/xattr tables), bytes. */
export const METADATA_BYTES = 8192;
/** Metadata block header bit: block stored uncompressed. */
export const METADATA_UNCOMPRESSED = 0x8000;
/** Data block / fragment size field bit: block stored uncompressed. */
export const DATA_UNCOMPRESSED = 1 << 24;
/** "No fragment" / "no xattr" marker (u32). */
export const NONE32 = 0xffffffff;
/** Max entries per directory header. */
export const DIR_HEADER_MAX = 256;
/** Max inode number delta inside one directory header (signed 16 bit). */
export const DIR_INODE_DELTA_MAX = 32767;
/** Max name length in bytes (kernel SQUASHFS_NAME_LEN). */
export const NAME_MAX = 256;
/** Compressor ids. */
export const COMPRESSOR_GZIP = 1;

/** Superblock flags. */
export const FLAG_UNCOMPRESSED_INODES = 0x0001;
export const FLAG_UNCOMPRESSED_DATA = 0x0002;
export const FLAG_UNCOMPRESSED_FRAGMENTS = 0x0008;
export const FLAG_ALWAYS_FRAGMENTS = 0x0020;
export const FLAG_DUPLICATES = 0x0040;
export const FLAG_UNCOMPRESSED_XATTRS = 0x0100;
export const FLAG_NO_XATTRS = 0x0200;
export const FLAG_UNCOMPRESSED_IDS = 0x0800;

/** Inode types (basic; extended = basic + 7). */
export const T_DIR = 1;
export const T_FILE = 2;
export const T_SYMLINK = 3;
export const T_BLOCK = 4;
export const T_CHAR = 5;
export const T_FIFO = 6;
export const T_SOCKET = 7;
export const EXT = 7;

/** File type bits stored in the inode mode field (like st_mode). */
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFBLK = 0o060000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;
export const S_IFSOCK = 0o140000;

/** Xattr name prefix ids. */
export const XATTR_PREFIXES: ReadonlyArray<[string, number]> = [
  ["user.", 0],
  ["trusted.", 1],
  ["security.", 2],
];
