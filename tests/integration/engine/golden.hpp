#pragma once
// Reference outputs from ../shared/models/README.txt (greedy, prompt "Once upon a time", BOS first,
// 200 new tokens or until EOS; produced with llama.cpp, agreeing with llama2.c's run.c).
namespace troupe::test::reference {
inline constexpr const char* stories260k = R"golden(Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.
Lily's mom said, "Lily, let's go to the park." Lily was sad and didn't know what to do. She said, "I want to play with your ball, but I can't find it."
Lily was sad and didn't know what to do. She said, "I'm sorry, Lily. I didn't know what to do."
Lily didn't want to help her mom, so she said, "I)golden";
inline constexpr const char* tinystories656k_q8_0 = R"golden(Once upon a time, a little girl named Lily lived in a small house with her mom. Lily loved to play with her toys and read her favorite book. One day, she found a big, round book in her room. It was shiny and shiny.
Lily wanted to show her mom the book to her mom. Her mom said, "Lily, can you help me clean it with my hands." Lily was very happy. She took the book with her mom's hands and said, "Okay, Mommy!" They put the book together.
After they finished cleaning, they put the book in the book. Lily was very happy. She said, "Thank you, Mommy! You are very good at fixing it." Lily smiled and hugged her mommy.)golden";
inline constexpr const char* tinystories656k = R"golden(Once upon a time, a little girl named Lily lived in a small house with her mom, dad, and her dog, Spot, Spot, loved to play all day. One day, Lily saw a small bird on the ground. She picked it up and tried to reach the bird and see what it was.
Lily had an idea. She asked her mom if she could help the bird. Her mom said, "Okay, let's go inside and see if you want a new bird." Lily listened to the bird and said, "Okay, let's go inside and see if you want."
Lily went to her house and found a new place to rest. She used the bird to open the door and it would not be as it. She felt sad for the bird's home and the birds would not be afraid to find it.)golden";
}  // namespace troupe::test::reference
