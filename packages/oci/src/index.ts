export const PACKAGE_NAME = "@supermachine/oci";
