/* A CURVE client in C, written from docs/protocol.md alone: it reads the key files with the page's recipe,
 * connects a DEALER to a worldsim server and prints the reply to one `ping` in hex.
 *
 *     curve_client ENDPOINT SERVER.key CLIENT.key_secret z85|binary
 *
 * "z85" hands libzmq the 40 characters of each key, "binary" the 32 bytes zmq_z85_decode makes of them.
 * libzmq's declarations are written out here, and its constants come in as -D options, so the test builds it
 * against the libzmq that pyzmq ships without needing zmq.h. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

void *zmq_ctx_new(void);
int zmq_ctx_term(void *context);
void *zmq_socket(void *context, int type);
int zmq_close(void *socket);
int zmq_setsockopt(void *socket, int option, const void *value, size_t length);
int zmq_connect(void *socket, const char *endpoint);
int zmq_send(void *socket, const void *buffer, size_t length, int flags);
int zmq_recv(void *socket, void *buffer, size_t length, int flags);
uint8_t *zmq_z85_decode(uint8_t *destination, const char *text);

/* Skip lines whose first non-blank character is '#'; in the line that starts with `which`, the key is the
 * text between the two double quotes. */
static int read_key(const char *path, const char *which, char key[41]) {
    char line[256];
    int found = 0;
    FILE *file = fopen(path, "r");
    if (file == NULL) return 0;
    while (!found && fgets(line, sizeof line, file) != NULL) {
        const char *text = line + strspn(line, " \t");
        if (*text == '#' || strncmp(text, which, strlen(which)) != 0) continue;
        const char *open = strchr(text, '"');
        const char *close = open != NULL ? strchr(open + 1, '"') : NULL;
        if (close != NULL && close - open - 1 == 40) {
            memcpy(key, open + 1, 40);
            key[40] = '\0';
            found = 1;
        }
    }
    fclose(file);
    return found;
}

static int set_key(void *socket, int option, const char *key, int binary) {
    uint8_t decoded[32];
    if (!binary) return zmq_setsockopt(socket, option, key, 40);
    if (zmq_z85_decode(decoded, key) == NULL) return -1;
    return zmq_setsockopt(socket, option, decoded, 32);
}

int main(int argc, char **argv) {
    char server[41], public_key[41], secret_key[41];
    unsigned char reply[4096];
    int linger = 0, timeout_ms = 3000;
    if (argc != 5) return 2;
    if (!read_key(argv[2], "public-key", server) || !read_key(argv[3], "public-key", public_key) ||
        !read_key(argv[3], "secret-key", secret_key))
        return 3;
    int binary = strcmp(argv[4], "binary") == 0;
    void *context = zmq_ctx_new();
    void *socket = zmq_socket(context, ZMQ_DEALER);
    zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(socket, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    if (set_key(socket, ZMQ_CURVE_SERVERKEY, server, binary) != 0 ||
        set_key(socket, ZMQ_CURVE_PUBLICKEY, public_key, binary) != 0 ||
        set_key(socket, ZMQ_CURVE_SECRETKEY, secret_key, binary) != 0)
        return 4;
    if (zmq_connect(socket, argv[1]) != 0) return 5;
    /* {"version": 1, "type": "ping", "id": 1, "time": 0} in msgpack */
    static const unsigned char ping[] = {
        0x84, 0xa7, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x01, 0xa4, 't', 'y', 'p', 'e', 0xa4, 'p', 'i', 'n', 'g',
        0xa2, 'i', 'd', 0x01, 0xa4, 't', 'i', 'm', 'e', 0x00};
    if (zmq_send(socket, ping, sizeof ping, 0) != (int)sizeof ping) return 6;
    int size = zmq_recv(socket, reply, sizeof reply, 0);
    if (size < 0) return 7;
    for (int i = 0; i < size && i < (int)sizeof reply; i++) printf("%02x", reply[i]);
    printf("\n");
    zmq_close(socket);
    zmq_ctx_term(context);
    return 0;
}
