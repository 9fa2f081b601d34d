export const PACKAGE_NAME = "@supermachine/rootfs";
