// NCCL's one C type Swift cannot spell: ncclUniqueId, a 128-byte struct that ncclCommInitRank takes by value
// (nccl.h: typedef struct { char internal[NCCL_UNIQUE_ID_BYTES]; } ncclUniqueId). Declared here so a
// @convention(c) function type can pass it as the C ABI does; nothing is linked (libnccl.so.2 is loaded at run
// time by HasteCUDA, STYLE §2.5).
#ifndef HASTE_NCCL_SHIM_H
#define HASTE_NCCL_SHIM_H

#define HASTE_NCCL_UNIQUE_ID_BYTES 128

typedef struct {
    char internal[HASTE_NCCL_UNIQUE_ID_BYTES];
} haste_nccl_unique_id;

#endif
