/* An empty program: the build links each layer's whole library into it with
 * only the layers below, so a call that points up the layers fails the link. */
int main(void)
{
    return 0;
}
